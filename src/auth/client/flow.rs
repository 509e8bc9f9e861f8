//! The authorization lifecycle of `forward --url` (issue 14): from a 401
//! to a token, and on to its refresh, as an explicit state machine.
//! Sans-I/O: the front hands in responses, callbacks and `now`; the flow
//! answers with the next [`Step`] (a fetch, a port to listen on, a URL to
//! open, "authorized", "failed").
//!
//! ```text
//!  Ready/Idle/Failed ─login─▶ Probing ─401 naming the metadata, or not─▶ (as on a 401)
//!  Ready/Idle ─401─▶ ResourceMetadata ─▶ ServerMetadata ─┬▶ Listening ─▶ Registering ─▶ Browsing ─callback─▶ Exchanging ─▶ Ready
//!                         (metadata known: straight on) ─┤        └──(client known)──────────▲
//!                                                        └▶ Exchanging (client_credentials)
//!  Ready ─expiring, or 401 with a refresh token─▶ Refreshing ─▶ Ready
//!                                                   └─invalid_grant─▶ (authorization, as above)
//!  any ─error─▶ Failed { until } ─FAIL_HOLD later, next 401─▶ (as from Ready)
//! ```
//!
//! Loops are cut by [`Attempt`]: a 401 right after a fresh authorization is
//! an error, not another authorization; a 401 after a refresh authorizes
//! once; a 403 `insufficient_scope` after a step-up is an error.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use super::wire::{AsMeta, ClientKind, Fetch, Registration, Tokens};
use super::wire::{client_auth, oauth_error, read_tokens};
use super::{
    ClientOptions, Grant, callback_port, form_decode, form_encode, random_b64, redirect_uri, s256,
};

mod discovery;

/// How long a person has to approve in the browser.
pub const AUTHORIZE_TIMEOUT: Duration = Duration::from_secs(300);
/// After a failure, further 401s get the same error this long instead of a
/// new flow (a denied or misconfigured authorization is not retried per
/// request).
pub const FAIL_HOLD: Duration = Duration::from_secs(5);
/// Refresh this long before expiry, or at 10% of the lifetime left if that
/// is less.
pub const REFRESH_MARGIN: u64 = 60;

/// What the front does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Run this exchange; hand its answer to `on_response`/`on_fetch_failed`.
    Fetch(Fetch),
    /// Listen on 127.0.0.1 (this port if free, else the next ones); then
    /// `listening(port)`.
    Listen { preferred: u16 },
    /// Open this URL in the browser, print it; wait for the callback.
    Browse { url: String },
    /// New tokens: store them, send what waited with them.
    Authorized,
    /// Answer what waited with this error.
    Failed(String),
    /// Take the store lock, re-read the store (another relay may have
    /// refreshed), then `adopt` or `start_refresh`.
    Refresh,
    /// Nothing to do now (a flow is already under way).
    Wait,
}

/// How far the current episode (since the last request that succeeded) has
/// gone: each rung is climbed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    None,
    Refreshed,
    Authorized,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    /// No token yet, nothing running.
    Idle,
    /// `auth login`'s unauthenticated request to the MCP endpoint, whose
    /// 401 may name the resource metadata.
    Probing,
    ResourceMetadata {
        candidates: VecDeque<String>,
        scope: Option<String>,
    },
    ServerMetadata {
        issuer: String,
        candidates: VecDeque<String>,
        scope: Option<String>,
    },
    /// The front is binding the callback listener.
    Listening {
        scope: String,
    },
    Registering {
        scope: String,
        redirect: String,
    },
    Browsing {
        scope: String,
        redirect: String,
        verifier: String,
        state: String,
        deadline: Instant,
    },
    Exchanging {
        scope: String,
    },
    Refreshing,
    Ready,
    Failed {
        why: String,
        until: Instant,
    },
}

impl Stage {
    fn name(&self) -> &'static str {
        match self {
            Stage::Idle => "idle",
            Stage::Probing => "probing",
            Stage::ResourceMetadata { .. } => "resource-metadata",
            Stage::ServerMetadata { .. } => "server-metadata",
            Stage::Listening { .. } => "listening",
            Stage::Registering { .. } => "registering",
            Stage::Browsing { .. } => "browsing",
            Stage::Exchanging { .. } => "exchanging",
            Stage::Refreshing => "refreshing",
            Stage::Ready => "ready",
            Stage::Failed { .. } => "failed",
        }
    }
}

/// The legal moves, by stage name.
fn allowed(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        (
            "idle" | "ready" | "failed",
            "probing" | "resource-metadata" | "listening" | "exchanging"
        ) | ("probing", "resource-metadata" | "listening" | "exchanging")
            | ("ready" | "failed", "refreshing")
            | ("resource-metadata", "resource-metadata" | "server-metadata")
            | (
                "server-metadata",
                "server-metadata" | "listening" | "exchanging"
            )
            | ("listening", "registering" | "browsing")
            | ("registering", "browsing")
            | ("browsing", "exchanging")
            | ("exchanging", "ready")
            | (
                "refreshing",
                "ready" | "resource-metadata" | "listening" | "exchanging"
            )
            | ("ready" | "failed" | "idle", "ready")
            | (_, "failed")
    )
}

/// Why a callback request was not accepted (the flow goes on waiting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackError {
    /// No authorization is waiting for a callback.
    NotWaiting,
    /// Wrong `state`, wrong `iss`, no code: not our redirect.
    Rejected(&'static str),
}

pub struct Flow {
    /// The upstream URL as configured.
    url: String,
    /// The resource indicator sent (RFC 8707): the metadata's `resource`
    /// when it covers `url`, else `url`.
    resource: String,
    opts: ClientOptions,
    pub meta: Option<AsMeta>,
    pub reg: Option<Registration>,
    pub tokens: Option<Tokens>,
    /// The callback port in use (remembered in the store).
    pub port: Option<u16>,
    /// Scopes the resource's metadata lists.
    prm_scopes: Vec<String>,
    attempt: Attempt,
    stage: Stage,
}

impl Flow {
    pub fn new(url: &str, opts: &ClientOptions) -> Flow {
        let url = url.split('#').next().unwrap_or(url).to_string();
        Flow {
            resource: url.clone(),
            url,
            opts: opts.clone(),
            meta: None,
            reg: None,
            tokens: None,
            port: None,
            prm_scopes: Vec::new(),
            attempt: Attempt::None,
            stage: Stage::Idle,
        }
    }

    /// What a store file held: metadata, client, tokens, port.
    pub fn restore(
        &mut self,
        resource: String,
        meta: AsMeta,
        reg: Option<Registration>,
        tokens: Option<Tokens>,
        port: Option<u16>,
    ) {
        self.resource = resource;
        self.meta = Some(meta);
        if self.reg.is_none() {
            self.reg = reg;
        }
        self.port = port;
        if tokens.is_some() {
            self.tokens = tokens;
            self.set_stage(Stage::Ready);
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn resource(&self) -> &str {
        &self.resource
    }

    pub fn stage_name(&self) -> &'static str {
        self.stage.name()
    }

    pub fn attempt(&self) -> Attempt {
        self.attempt
    }

    /// The access token to send, if any.
    pub fn bearer(&self) -> Option<&str> {
        self.tokens.as_ref().map(|t| t.access.as_str())
    }

    /// A flow is under way: requests wait.
    pub fn busy(&self) -> bool {
        !matches!(
            self.stage,
            Stage::Idle | Stage::Ready | Stage::Failed { .. }
        )
    }

    /// The browser deadline, while waiting for the callback.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.stage {
            Stage::Browsing { deadline, .. } => Some(*deadline),
            _ => None,
        }
    }

    fn set_stage(&mut self, next: Stage) {
        let (from, to) = (self.stage.name(), next.name());
        if !allowed(from, to) {
            debug_assert!(false, "oauth flow: illegal move {from} → {to}");
            crate::log_error!("oauth flow: illegal move {from} → {to}; failing the flow");
            self.stage = Stage::Failed {
                why: format!("internal error ({from} → {to})"),
                until: Instant::now(),
            };
            return;
        }
        crate::log_debug!("oauth flow: {from} → {to}");
        self.stage = next;
    }

    fn fail(&mut self, why: String, now: Instant) -> Step {
        self.set_stage(Stage::Failed {
            why: why.clone(),
            until: now + FAIL_HOLD,
        });
        Step::Failed(why)
    }

    /// The front could not carry a step out (no port to listen on, …).
    pub fn abort(&mut self, why: String, now: Instant) -> Step {
        self.fail(why, now)
    }

    /// A request answered 2xx: the episode is over, the next 401 may
    /// refresh and then authorize again.
    pub fn on_success(&mut self) {
        self.attempt = Attempt::None;
    }

    /// The token is due for a refresh (the front locks the store first).
    pub fn refresh_due(&self, now_unix: u64) -> bool {
        let Some(t) = &self.tokens else { return false };
        let (Some(exp), Some(_)) = (t.expires_at, &t.refresh) else {
            return false;
        };
        let life = exp.saturating_sub(t.issued_at);
        let margin = REFRESH_MARGIN.min(life / 10);
        matches!(self.stage, Stage::Ready) && self.meta.is_some() && now_unix + margin >= exp
    }

    /// Another relay refreshed while we waited for the lock: take its
    /// tokens instead of refreshing.
    pub fn adopt(&mut self, tokens: Tokens) {
        self.tokens = Some(tokens);
        if !matches!(self.stage, Stage::Ready) && !self.busy() {
            self.set_stage(Stage::Ready);
        }
    }

    /// Starts a refresh (the store lock is held).
    pub fn start_refresh(&mut self, now: Instant) -> Step {
        if self.busy() {
            return Step::Wait;
        }
        let (Some(meta), Some(reg), Some(rt)) = (
            self.meta.clone(),
            self.reg.clone(),
            self.tokens.as_ref().and_then(|t| t.refresh.clone()),
        ) else {
            return self.authorize(None, now);
        };
        self.attempt = Attempt::Refreshed;
        self.set_stage(Stage::Refreshing);
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", rt.as_str()),
            ("resource", self.resource.as_str()),
        ];
        let basic = client_auth(&meta, &reg, &mut form);
        Step::Fetch(Fetch::form(&meta.token_endpoint, &form, basic))
    }

    /// The upstream answered 401, or 403 with `insufficient_scope`, to a
    /// request sent with `sent` as its token.
    pub fn on_denied(
        &mut self,
        status: u16,
        challenge: &super::Challenge,
        sent: Option<&str>,
        now: Instant,
    ) -> Step {
        if self.busy() {
            return Step::Wait;
        }
        if let Stage::Failed { why, until } = &self.stage
            && now < *until
        {
            return Step::Failed(why.clone());
        }
        if sent.is_some() && sent != self.bearer() {
            // Sent with a token since replaced: retry with the new one.
            return Step::Authorized;
        }
        let step_up = status == 403;
        match (self.attempt, step_up) {
            (Attempt::Authorized, true) => {
                return self.fail(
                    "the upstream still answers insufficient_scope after a step-up authorization"
                        .into(),
                    now,
                );
            }
            (Attempt::Authorized, false) => {
                return self.fail(
                    "the upstream refused the token the authorization server just issued (401)"
                        .into(),
                    now,
                );
            }
            _ => {}
        }
        if step_up {
            let mut scopes: Vec<String> = Vec::new();
            for s in self
                .tokens
                .as_ref()
                .map(|t| t.scope.as_str())
                .into_iter()
                .chain(challenge.scope.as_deref())
                .flat_map(str::split_whitespace)
            {
                if !scopes.iter().any(|x| x == s) {
                    scopes.push(s.to_string());
                }
            }
            return self.authorize_with(Some(scopes.join(" ")), challenge, now);
        }
        if self.attempt == Attempt::None
            && self.tokens.as_ref().is_some_and(|t| t.refresh.is_some())
            && self.meta.is_some()
            && self.reg.is_some()
        {
            return Step::Refresh;
        }
        self.authorize_with(challenge.scope.clone(), challenge, now)
    }

    /// A full authorization (no refresh), e.g. after `invalid_grant`.
    pub fn authorize(&mut self, scope: Option<String>, now: Instant) -> Step {
        self.authorize_with(scope, &super::Challenge::default(), now)
    }

    /// The scope to ask for: the challenge's, else `--oauth-scope`, else
    /// what the resource's metadata lists; may be empty.
    fn choose_scope(&self, asked: Option<String>) -> String {
        asked
            .filter(|s| !s.is_empty())
            .or_else(|| (!self.opts.scopes.is_empty()).then(|| self.opts.scopes.join(" ")))
            .unwrap_or_else(|| self.prm_scopes.join(" "))
    }

    fn after_metadata(&mut self, scope: Option<String>, now: Instant) -> Step {
        let scope = self.choose_scope(scope);
        let Some(meta) = self.meta.clone() else {
            return self.fail("no authorization server metadata".into(), now);
        };
        match self.opts.grant {
            Grant::ClientCredentials => {
                let (Some(id), Some(secret)) = (&self.opts.client_id, &self.opts.client_secret)
                else {
                    return self.fail(
                        "--oauth-grant client_credentials needs --oauth-client-id and \
                         --oauth-client-secret-file"
                            .into(),
                        now,
                    );
                };
                let reg = Registration {
                    id: id.clone(),
                    secret: Some(secret.clone()),
                    kind: ClientKind::Preregistered,
                    redirect_uri: None,
                };
                self.reg = Some(reg.clone());
                self.set_stage(Stage::Exchanging {
                    scope: scope.clone(),
                });
                let mut form = vec![
                    ("grant_type", "client_credentials"),
                    ("resource", self.resource.as_str()),
                ];
                if !scope.is_empty() {
                    form.push(("scope", scope.as_str()));
                }
                let basic = client_auth(&meta, &reg, &mut form);
                Step::Fetch(Fetch::form(&meta.token_endpoint, &form, basic))
            }
            Grant::AuthorizationCode => {
                let preferred = self
                    .port
                    .unwrap_or_else(|| callback_port(&meta.issuer, &self.resource, 0));
                self.set_stage(Stage::Listening { scope });
                Step::Listen { preferred }
            }
        }
    }

    /// The callback listener is bound on `port`.
    pub fn listening(&mut self, port: u16, now: Instant) -> Step {
        let Stage::Listening { scope } = &self.stage else {
            return Step::Wait;
        };
        let scope = scope.clone();
        self.port = Some(port);
        let redirect = redirect_uri(port);
        let Some(meta) = self.meta.clone() else {
            return self.fail("no authorization server metadata".into(), now);
        };
        // Client registration, in order: pre-registered, metadata
        // document, dynamic (a stored dynamic client for this redirect URI
        // is reused).
        if let Some(id) = &self.opts.client_id {
            self.reg = Some(Registration {
                id: id.clone(),
                secret: self.opts.client_secret.clone(),
                kind: ClientKind::Preregistered,
                redirect_uri: None,
            });
            return self.browse(scope, redirect, now);
        }
        if let Some(url) = &self.opts.client_metadata_url
            && meta.cimd
        {
            self.reg = Some(Registration {
                id: url.clone(),
                secret: None,
                kind: ClientKind::MetadataDocument,
                redirect_uri: None,
            });
            return self.browse(scope, redirect, now);
        }
        if let Some(r) = &self.reg
            && r.kind == ClientKind::Dynamic
            && r.redirect_uri.as_deref() == Some(redirect.as_str())
        {
            return self.browse(scope, redirect, now);
        }
        let Some(endpoint) = meta.registration_endpoint.clone() else {
            return self.fail(
                format!(
                    "{} offers no dynamic client registration{}: give a pre-registered client \
                     with --oauth-client-id",
                    meta.issuer,
                    if self.opts.client_metadata_url.is_some() {
                        " and does not accept client metadata documents"
                    } else {
                        ""
                    }
                ),
                now,
            );
        };
        let body = json!({
            "client_name": "mcp-relay",
            "redirect_uris": [redirect],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        });
        self.set_stage(Stage::Registering { scope, redirect });
        Step::Fetch(Fetch {
            url: endpoint,
            method: "POST",
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("accept".into(), "application/json".into()),
            ],
            body: body.to_string().into_bytes(),
        })
    }

    fn browse(&mut self, scope: String, redirect: String, now: Instant) -> Step {
        let (Some(meta), Some(reg)) = (&self.meta, &self.reg) else {
            return self.fail("no client to authorize".into(), now);
        };
        let (Some(verifier), Some(state)) = (random_b64(32), random_b64(16)) else {
            return self.fail(
                "the system random number generator failed (no PKCE verifier)".into(),
                now,
            );
        };
        let challenge = s256(&verifier);
        let mut q = vec![
            ("response_type", "code"),
            ("client_id", reg.id.as_str()),
            ("redirect_uri", redirect.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("state", state.as_str()),
            ("resource", self.resource.as_str()),
        ];
        if !scope.is_empty() {
            q.push(("scope", scope.as_str()));
        }
        let sep = if meta.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        let url = format!("{}{sep}{}", meta.authorization_endpoint, form_encode(&q));
        self.set_stage(Stage::Browsing {
            scope,
            redirect,
            verifier,
            state,
            deadline: now + AUTHORIZE_TIMEOUT,
        });
        Step::Browse { url }
    }

    /// The browser came back to the callback with `query`.
    pub fn on_callback(&mut self, query: &str, now: Instant) -> Result<Step, CallbackError> {
        let Stage::Browsing {
            scope,
            redirect,
            verifier,
            state,
            ..
        } = &self.stage
        else {
            return Err(CallbackError::NotWaiting);
        };
        let q = form_decode(query).ok_or(CallbackError::Rejected("malformed query"))?;
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if get("state") != Some(state.as_str()) {
            return Err(CallbackError::Rejected("state does not match"));
        }
        let Some(meta) = self.meta.clone() else {
            return Err(CallbackError::NotWaiting);
        };
        match get("iss") {
            Some(iss) if iss != meta.issuer => {
                // RFC 9207 §2.4: a mix-up; this flow is over.
                let why = format!(
                    "the authorization response names issuer {iss:?}, not {:?}",
                    meta.issuer
                );
                return Ok(self.fail(why, now));
            }
            None if meta.iss_on_redirect => {
                return Ok(self.fail(
                    "the authorization response lacks the iss its server promises".into(),
                    now,
                ));
            }
            _ => {}
        }
        if let Some(e) = get("error") {
            let desc = get("error_description").unwrap_or("");
            return Ok(self.fail(format!("authorization refused: {e} {desc}"), now));
        }
        let Some(code) = get("code") else {
            return Err(CallbackError::Rejected("no code"));
        };
        let Some(reg) = self.reg.clone() else {
            return Err(CallbackError::NotWaiting);
        };
        let (code, redirect, verifier, scope) = (
            code.to_string(),
            redirect.clone(),
            verifier.clone(),
            scope.clone(),
        );
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect.as_str()),
            ("code_verifier", verifier.as_str()),
            ("resource", self.resource.as_str()),
        ];
        let basic = client_auth(&meta, &reg, &mut form);
        let fetch = Fetch::form(&meta.token_endpoint, &form, basic);
        self.set_stage(Stage::Exchanging { scope });
        Ok(Step::Fetch(fetch))
    }

    /// Time passes: the browser's deadline.
    pub fn on_tick(&mut self, now: Instant) -> Option<Step> {
        let d = self.deadline()?;
        (now >= d).then(|| {
            self.fail(
                format!(
                    "nobody completed the authorization in the browser within {}s",
                    AUTHORIZE_TIMEOUT.as_secs()
                ),
                now,
            )
        })
    }

    /// The exchange the last [`Step::Fetch`] asked for failed to complete.
    pub fn on_fetch_failed(&mut self, why: &str, now: Instant, now_unix: u64) -> Step {
        match &self.stage {
            Stage::Probing | Stage::ResourceMetadata { .. } | Stage::ServerMetadata { .. } => {
                self.on_response(0, None, why.as_bytes(), now, now_unix)
            }
            Stage::Registering { .. } | Stage::Exchanging { .. } | Stage::Refreshing => {
                let what = self.stage.name();
                self.fail(format!("{what}: {why}"), now)
            }
            _ => Step::Wait,
        }
    }

    /// The response (status 0: no response, `body` says why) to the last
    /// [`Step::Fetch`], with its `WWW-Authenticate` value (all of them,
    /// joined by commas), if any.
    pub fn on_response(
        &mut self,
        status: u16,
        www_authenticate: Option<&str>,
        body: &[u8],
        now: Instant,
        now_unix: u64,
    ) -> Step {
        match std::mem::replace(&mut self.stage, Stage::Idle) {
            Stage::Probing => {
                self.stage = Stage::Probing;
                self.on_probe(status, www_authenticate, body, now)
            }
            Stage::ResourceMetadata { candidates, scope } => {
                self.on_resource_metadata(candidates, scope, status, body, now)
            }
            Stage::ServerMetadata {
                issuer,
                candidates,
                scope,
            } => self.on_server_metadata(issuer, candidates, scope, status, body, now),
            Stage::Registering { scope, redirect } => {
                self.stage = Stage::Registering {
                    scope: scope.clone(),
                    redirect: redirect.clone(),
                };
                if !(200..300).contains(&status) {
                    return self.fail(
                        format!(
                            "dynamic client registration refused (HTTP {status}): {}",
                            oauth_error(body)
                        ),
                        now,
                    );
                }
                let doc: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                let Some(id) = doc.get("client_id").and_then(Value::as_str) else {
                    return self.fail("dynamic client registration: no client_id".into(), now);
                };
                self.reg = Some(Registration {
                    id: id.to_string(),
                    secret: doc
                        .get("client_secret")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    kind: ClientKind::Dynamic,
                    redirect_uri: Some(redirect.clone()),
                });
                self.browse(scope, redirect, now)
            }
            Stage::Exchanging { scope } => {
                self.stage = Stage::Exchanging {
                    scope: scope.clone(),
                };
                match read_tokens(status, body, &scope, None, now_unix) {
                    Ok(t) => {
                        self.tokens = Some(t);
                        // Fresh from an authorization: a 401 now is final.
                        self.attempt = Attempt::Authorized;
                        self.set_stage(Stage::Ready);
                        Step::Authorized
                    }
                    Err(e) => {
                        if e.contains("invalid_client")
                            && self
                                .reg
                                .as_ref()
                                .is_some_and(|r| r.kind == ClientKind::Dynamic)
                        {
                            // A stale registration: the next attempt registers again.
                            self.reg = None;
                        }
                        self.fail(format!("token request refused: {e}"), now)
                    }
                }
            }
            Stage::Refreshing => {
                self.stage = Stage::Refreshing;
                let old = self.tokens.as_ref().and_then(|t| t.refresh.clone());
                let scope = self
                    .tokens
                    .as_ref()
                    .map(|t| t.scope.clone())
                    .unwrap_or_default();
                match read_tokens(status, body, &scope, old, now_unix) {
                    Ok(t) => {
                        self.tokens = Some(t);
                        self.set_stage(Stage::Ready);
                        Step::Authorized
                    }
                    Err(e) if (400..500).contains(&status) => {
                        // invalid_grant (revoked, expired, rotated away)
                        // or the like: one full authorization.
                        crate::log_info!("oauth: refresh refused ({e}); authorizing again");
                        if let Some(t) = self.tokens.as_mut() {
                            t.refresh = None;
                        }
                        if e.contains("invalid_client")
                            && self
                                .reg
                                .as_ref()
                                .is_some_and(|r| r.kind == ClientKind::Dynamic)
                        {
                            self.reg = None;
                        }
                        self.authorize(Some(scope), now)
                    }
                    Err(e) => self.fail(format!("refreshing the token failed: {e}"), now),
                }
            }
            other => {
                self.stage = other;
                Step::Wait
            }
        }
    }
}

#[cfg(test)]
mod tests;
