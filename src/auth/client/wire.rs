//! What the OAuth client sends and reads (issue 14): the authorization
//! server's metadata, registrations, tokens, the token requests' client
//! authentication, token responses. No state: `flow.rs` decides when.

use serde_json::Value;

use super::{Grant, form_encode};
use crate::upstream::url::Url;

/// The authorization server, from its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsMeta {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub registration_endpoint: Option<String>,
    pub revocation_endpoint: Option<String>,
    /// `client_id_metadata_document_supported`.
    pub cimd: bool,
    /// `authorization_response_iss_parameter_supported` (RFC 9207).
    pub iss_on_redirect: bool,
    /// Client secrets go in the form (`client_secret_post`), else Basic.
    pub secret_in_form: bool,
}

/// How the client came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// `--oauth-client-id`.
    Preregistered,
    /// `--oauth-client-metadata-url`.
    MetadataDocument,
    /// RFC 7591, registered for one redirect URI.
    Dynamic,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Registration {
    pub id: String,
    pub secret: Option<String>,
    pub kind: ClientKind,
    /// The redirect URI a dynamic client was registered with.
    pub redirect_uri: Option<String>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Tokens {
    pub access: String,
    pub refresh: Option<String>,
    /// Unix seconds.
    pub expires_at: Option<u64>,
    /// Unix seconds when issued (the lifetime, for the refresh margin).
    pub issued_at: u64,
    pub scope: String,
}

impl std::fmt::Debug for Registration {
    // Never prints the client secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("kind", &self.kind)
            .field("redirect_uri", &self.redirect_uri)
            .finish()
    }
}

impl std::fmt::Debug for Tokens {
    // Never prints a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("refresh", &self.refresh.is_some())
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .finish()
    }
}

/// One HTTP exchange the flow needs.
#[derive(Clone, PartialEq, Eq)]
pub struct Fetch {
    pub url: String,
    pub method: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Fetch {
    // Token requests carry codes, verifiers, refresh tokens and client
    // secrets in the body or an `Authorization` header: neither is printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("authorization") {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), v)
            })
            .collect();
        f.debug_struct("Fetch")
            .field("url", &self.url)
            .field("method", &self.method)
            .field("headers", &headers)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl Fetch {
    pub(super) fn get(url: String) -> Fetch {
        Fetch {
            url,
            method: "GET",
            headers: vec![("accept".into(), "application/json".into())],
            body: Vec::new(),
        }
    }

    pub(super) fn form(url: &str, pairs: &[(&str, &str)], basic: Option<String>) -> Fetch {
        let mut headers = vec![
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded".to_string(),
            ),
            ("accept".into(), "application/json".into()),
        ];
        if let Some(b) = basic {
            headers.push(("authorization".into(), b));
        }
        Fetch {
            url: url.to_string(),
            method: "POST",
            headers,
            body: form_encode(pairs).into_bytes(),
        }
    }
}

/// Client authentication on a token request: public clients name
/// themselves in the form; confidential ones post their secret or use
/// Basic, as the server supports.
pub(super) fn client_auth<'a>(
    meta: &AsMeta,
    reg: &'a Registration,
    form: &mut Vec<(&'a str, &'a str)>,
) -> Option<String> {
    match &reg.secret {
        None => {
            form.push(("client_id", reg.id.as_str()));
            None
        }
        Some(secret) if meta.secret_in_form => {
            form.push(("client_id", reg.id.as_str()));
            form.push(("client_secret", secret.as_str()));
            None
        }
        Some(secret) => {
            // RFC 6749 §2.3.1: form-encoded id and secret, then Basic.
            Some(crate::auth::form::basic_credentials(&reg.id, secret))
        }
    }
}

/// RFC 8414 metadata, checked: the issuer exactly, S256 for the code grant.
pub(super) fn read_server_metadata(
    body: &[u8],
    issuer: &str,
    grant: Grant,
) -> Result<AsMeta, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    match doc.get("issuer").and_then(Value::as_str) {
        Some(i) if i == issuer => {}
        Some(i) => {
            return Err(format!(
                "the metadata names issuer {i:?}, not {issuer:?}: refused (RFC 8414 §3.3)"
            ));
        }
        None => return Err("the metadata has no issuer".into()),
    }
    let url = |k: &str| -> Result<Option<String>, String> {
        match doc.get(k).and_then(Value::as_str) {
            Some(u) => Url::parse(u)
                .map(|_| Some(u.to_string()))
                .map_err(|e| format!("{k}: {e}")),
            None => Ok(None),
        }
    };
    let token_endpoint = url("token_endpoint")?.ok_or("no token_endpoint")?;
    let authorization_endpoint = url("authorization_endpoint")?;
    let strs = |k: &str| -> Vec<&str> {
        doc.get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    };
    if grant == Grant::AuthorizationCode {
        if !strs("code_challenge_methods_supported").contains(&"S256") {
            return Err(format!(
                "{issuer} does not advertise PKCE S256 (code_challenge_methods_supported): \
                 refusing to authorize with it"
            ));
        }
        if authorization_endpoint.is_none() {
            return Err("no authorization_endpoint".into());
        }
    }
    let methods = strs("token_endpoint_auth_methods_supported");
    Ok(AsMeta {
        issuer: issuer.to_string(),
        authorization_endpoint: authorization_endpoint.unwrap_or_default(),
        token_endpoint,
        registration_endpoint: url("registration_endpoint")?,
        revocation_endpoint: url("revocation_endpoint")?,
        cimd: doc
            .get("client_id_metadata_document_supported")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        iss_on_redirect: doc
            .get("authorization_response_iss_parameter_supported")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        secret_in_form: methods.contains(&"client_secret_post")
            && !methods.contains(&"client_secret_basic"),
    })
}

/// An OAuth error body's `error` and description, for messages.
pub(super) fn oauth_error(body: &[u8]) -> String {
    let doc: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match doc.get("error").and_then(Value::as_str) {
        Some(e) => match doc.get("error_description").and_then(Value::as_str) {
            Some(d) => format!("{e} ({d})"),
            None => e.to_string(),
        },
        None => "no OAuth error in the body".into(),
    }
}

/// A token response (RFC 6749 §5.1) → tokens; a refresh that returns no
/// new refresh token keeps `old`.
pub(super) fn read_tokens(
    status: u16,
    body: &[u8],
    asked_scope: &str,
    old: Option<String>,
    now_unix: u64,
) -> Result<Tokens, String> {
    if status != 200 {
        return Err(format!("HTTP {status}: {}", oauth_error(body)));
    }
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let access = doc
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| (0x21..0x7f).contains(&b)))
        .ok_or("no usable access_token")?;
    match doc.get("token_type").and_then(Value::as_str) {
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        other => return Err(format!("token_type {other:?} is not Bearer")),
    }
    let expires_at = doc
        .get("expires_in")
        .and_then(Value::as_u64)
        .map(|s| now_unix.saturating_add(s));
    Ok(Tokens {
        access: access.to_string(),
        refresh: doc
            .get("refresh_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or(old),
        expires_at,
        issued_at: now_unix,
        scope: doc
            .get("scope")
            .and_then(Value::as_str)
            .unwrap_or(asked_scope)
            .to_string(),
    })
}

/// What a resource's RFC 9728 document says.
pub(super) struct ResourceMetadata {
    pub issuer: String,
    /// Its `resource`, when given (checked to cover the URL).
    pub resource: Option<String>,
    pub scopes: Vec<String>,
}

/// RFC 9728 document of the upstream at `url` → its first authorization
/// server, its resource, its scopes.
pub(super) fn read_resource_metadata(body: &[u8], url: &str) -> Result<ResourceMetadata, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let resource = doc.get("resource").and_then(Value::as_str);
    if let Some(r) = resource {
        // RFC 9728 §3.3 / MCP: it must be the resource we asked about
        // (the same URL, or a prefix of it on a path boundary).
        let covers = url == r
            || (url.starts_with(r) && (r.ends_with('/') || url[r.len()..].starts_with(['/', '?'])));
        if !covers {
            return Err(format!("the metadata is for resource {r:?}, not {url:?}"));
        }
    }
    let scopes = doc
        .get("scopes_supported")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let issuer = doc
        .get("authorization_servers")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .ok_or("no authorization_servers")?;
    Url::parse(issuer).map_err(|e| format!("authorization server: {e}"))?;
    Ok(ResourceMetadata {
        issuer: issuer.to_string(),
        resource: resource.map(str::to_owned),
        scopes,
    })
}
