//! Documents and headers of the protected-resource side: the RFC 9728
//! metadata the relay serves, the `WWW-Authenticate` challenges it sends
//! (RFC 6750 §3, RFC 9728 §5.1), and the authorization server's metadata
//! it reads (RFC 8414; OpenID Connect Discovery).

use serde_json::{Value, json};

use crate::upstream::url::Url;

const AS_WELL_KNOWN: &str = "/.well-known/oauth-authorization-server";
const OIDC_WELL_KNOWN: &str = "/.well-known/openid-configuration";
/// RFC 9728 §3: the relay's own metadata.
pub const PRM_WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// `scheme://host[:port]` and the path of a URL (no query: issuers and
/// resources have none worth keeping here).
fn split(url: &str) -> Option<(String, String)> {
    let u = Url::parse(url).ok()?;
    let scheme = if u.tls { "https" } else { "http" };
    let path = u.target.split('?').next().unwrap_or("/");
    let path = path.trim_end_matches('/');
    Some((format!("{scheme}://{}", u.host_header), path.to_string()))
}

/// The URLs to look for an issuer's metadata at, in the MCP authorization
/// spec's order: RFC 8414 (well-known inserted before the path), OpenID
/// with the same insertion, then OpenID appended to the issuer.
pub fn discovery_urls(issuer: &str) -> Vec<String> {
    let Some((origin, path)) = split(issuer) else {
        return Vec::new();
    };
    if path.is_empty() {
        vec![
            format!("{origin}{AS_WELL_KNOWN}"),
            format!("{origin}{OIDC_WELL_KNOWN}"),
        ]
    } else {
        vec![
            format!("{origin}{AS_WELL_KNOWN}{path}"),
            format!("{origin}{OIDC_WELL_KNOWN}{path}"),
            format!("{origin}{path}{OIDC_WELL_KNOWN}"),
        ]
    }
}

/// The `jwks_uri` of an authorization server's metadata, which must name
/// `issuer` exactly (RFC 8414 §3.3: otherwise it must not be used).
pub fn jwks_uri_of(body: &[u8], issuer: &str) -> Result<String, String> {
    jwks_uri_opt(body, issuer)?.ok_or_else(|| "no jwks_uri".into())
}

/// As [`jwks_uri_of`], a document without `jwks_uri` being `Ok(None)`.
pub fn jwks_uri_opt(body: &[u8], issuer: &str) -> Result<Option<String>, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    match doc.get("issuer").and_then(Value::as_str) {
        Some(i) if i == issuer => {}
        Some(i) => return Err(format!("issuer {i:?} does not match {issuer:?}")),
        None => return Err("no issuer".into()),
    }
    let Some(uri) = doc.get("jwks_uri") else {
        return Ok(None);
    };
    let uri = uri.as_str().ok_or("jwks_uri: not a string")?;
    Url::parse(uri).map_err(|e| format!("jwks_uri: {e}"))?;
    Ok(Some(uri.to_string()))
}

/// Where a resource's metadata is published (RFC 9728 §3.1: the
/// well-known path inserted before the resource's path).
pub fn metadata_url(resource: &str) -> Option<String> {
    let (origin, path) = split(resource)?;
    Some(format!("{origin}{PRM_WELL_KNOWN}{path}"))
}

/// The paths the relay answers its metadata on: the bare well-known path
/// and the path-specific form for `resource`.
pub fn metadata_paths(resource: &str) -> Vec<String> {
    let mut out = vec![PRM_WELL_KNOWN.to_string()];
    if let Some((_, path)) = split(resource)
        && !path.is_empty()
    {
        out.push(format!("{PRM_WELL_KNOWN}{path}"));
    }
    out
}

/// The RFC 9728 document.
pub fn resource_document(resource: &str, issuer: &str, scopes: &[String]) -> Vec<u8> {
    let mut doc = json!({
        "resource": resource,
        "authorization_servers": [issuer],
        "bearer_methods_supported": ["header"],
    });
    if !scopes.is_empty() {
        doc["scopes_supported"] = json!(scopes);
    }
    doc.to_string().into_bytes()
}

/// What a challenge says beyond where the metadata is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge<'a> {
    /// No token: no error code (RFC 6750 §3.1).
    NoToken,
    InvalidToken(&'a str),
    InsufficientScope,
}

/// An auth-param value as a quoted-string.
fn quoted(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '"' | '\\' => {
                s.push('\\');
                s.push(c);
            }
            c if c.is_control() => s.push(' '),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// The `WWW-Authenticate` value of a 401 or 403.
pub fn challenge(metadata_url: &str, scopes: &[String], what: Challenge<'_>) -> String {
    let mut h = format!("Bearer resource_metadata={}", quoted(metadata_url));
    match what {
        Challenge::NoToken => {}
        Challenge::InvalidToken(desc) => {
            h.push_str(", error=\"invalid_token\", error_description=");
            h.push_str(&quoted(desc));
        }
        Challenge::InsufficientScope => h.push_str(", error=\"insufficient_scope\""),
    }
    if !scopes.is_empty() {
        h.push_str(", scope=");
        h.push_str(&quoted(&scopes.join(" ")));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_urls_follow_the_mcp_order() {
        assert_eq!(
            discovery_urls("https://as.example"),
            [
                "https://as.example/.well-known/oauth-authorization-server",
                "https://as.example/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            discovery_urls("http://127.0.0.1:9000/tenant1/"),
            [
                "http://127.0.0.1:9000/.well-known/oauth-authorization-server/tenant1",
                "http://127.0.0.1:9000/.well-known/openid-configuration/tenant1",
                "http://127.0.0.1:9000/tenant1/.well-known/openid-configuration"
            ]
        );
        assert!(discovery_urls("ftp://x").is_empty());
    }

    #[test]
    fn authorization_server_metadata_must_name_the_issuer() {
        let ok = br#"{"issuer":"https://as.example","jwks_uri":"https://keys.example/jwks"}"#;
        assert_eq!(
            jwks_uri_of(ok, "https://as.example").unwrap(),
            "https://keys.example/jwks"
        );
        assert!(
            jwks_uri_of(ok, "https://as.example/").is_err(),
            "exact match"
        );
        assert!(jwks_uri_of(br#"{"jwks_uri":"https://k/j"}"#, "https://as.example").is_err());
        assert!(jwks_uri_of(br#"{"issuer":"https://as.example"}"#, "https://as.example").is_err());
        assert!(
            jwks_uri_of(
                br#"{"issuer":"https://as.example","jwks_uri":"file:///etc/passwd"}"#,
                "https://as.example"
            )
            .is_err()
        );
        assert!(jwks_uri_of(b"[", "https://as.example").is_err());
    }

    #[test]
    fn resource_metadata_location_and_document() {
        assert_eq!(
            metadata_url("https://relay.example/mcp").as_deref(),
            Some("https://relay.example/.well-known/oauth-protected-resource/mcp")
        );
        assert_eq!(
            metadata_url("http://127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080/.well-known/oauth-protected-resource")
        );
        assert_eq!(
            metadata_paths("https://relay.example/mcp"),
            [
                "/.well-known/oauth-protected-resource",
                "/.well-known/oauth-protected-resource/mcp"
            ]
        );
        let doc: Value = serde_json::from_slice(&resource_document(
            "https://relay.example/mcp",
            "https://as.example",
            &["mcp:read".into()],
        ))
        .unwrap();
        assert_eq!(doc["resource"], "https://relay.example/mcp");
        assert_eq!(doc["authorization_servers"][0], "https://as.example");
        assert_eq!(doc["scopes_supported"][0], "mcp:read");
    }

    #[test]
    fn challenges() {
        let url = "https://r/.well-known/oauth-protected-resource/mcp";
        let scopes = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            challenge(url, &[], Challenge::NoToken),
            format!("Bearer resource_metadata=\"{url}\"")
        );
        assert_eq!(
            challenge(url, &scopes, Challenge::InvalidToken("token \"expired\"")),
            format!(
                "Bearer resource_metadata=\"{url}\", error=\"invalid_token\", error_description=\"token \\\"expired\\\"\", scope=\"a b\""
            )
        );
        assert_eq!(
            challenge(url, &scopes, Challenge::InsufficientScope),
            format!(
                "Bearer resource_metadata=\"{url}\", error=\"insufficient_scope\", scope=\"a b\""
            )
        );
    }
}
