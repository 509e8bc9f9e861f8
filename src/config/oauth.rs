//! The `oauth` object of a `--config` file: the `--oauth-*` flags.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::auth::{IntrospectionOptions, OAuthOptions};

const KEYS: &[&str] = &[
    "issuer",
    "audience",
    "scopes",
    "jwks_uri",
    "ca_file",
    "clock_skew",
    "jwks_min_refetch",
    "introspection",
];

const INTROSPECTION_KEYS: &[&str] = &["url", "client_id", "secret_file", "cache"];

/// `{"issuer": URL, "audience": URL, "scopes": [..], "jwks_uri": URL,
/// "ca_file": PATH, "clock_skew": DUR, "jwks_min_refetch": DUR,
/// "introspection": {"url": URL, "client_id": ID, "secret_file": PATH,
/// "cache": DUR}}`.
pub(super) fn parse(v: &Value, at: &str, dir: Option<&Path>) -> Result<OAuthOptions, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{at}: must be an object"))?;
    for k in obj.keys() {
        if !KEYS.contains(&k.as_str()) {
            return Err(super::unknown(&format!("{at}.{k}"), k, KEYS));
        }
    }
    let string = |k: &str| -> Result<Option<String>, String> {
        match obj.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{at}.{k}: expected a string")),
        }
    };
    let dur = |k: &str, default: Duration| -> Result<Duration, String> {
        match obj.get(k) {
            None => Ok(default),
            Some(v) => super::duration(v, &format!("{at}.{k}")),
        }
    };
    let scopes = match obj.get("scopes") {
        None => Vec::new(),
        Some(v) => v
            .as_array()
            .and_then(|a| {
                a.iter()
                    .map(|s| s.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| format!("{at}.scopes: expected an array of strings"))?,
    };
    let opts = OAuthOptions {
        issuer: string("issuer")?.ok_or_else(|| format!("{at}.issuer: required"))?,
        audience: string("audience")?.ok_or_else(|| format!("{at}.audience: required"))?,
        scopes,
        jwks_uri: string("jwks_uri")?,
        ca_file: match obj.get("ca_file") {
            None => None,
            Some(v) => Some(super::file(v, &format!("{at}.ca_file"), dir)?),
        },
        clock_skew: dur("clock_skew", Duration::from_secs(60))?,
        jwks_min_refetch: dur("jwks_min_refetch", Duration::from_secs(30))?,
        introspection: match obj.get("introspection") {
            None => None,
            Some(v) => Some(introspection(v, &format!("{at}.introspection"), dir)?),
        },
    };
    crate::cli::check_oauth(&opts).map_err(|e| format!("{at}: {e}"))?;
    Ok(opts)
}

fn introspection(v: &Value, at: &str, dir: Option<&Path>) -> Result<IntrospectionOptions, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{at}: must be an object"))?;
    for k in obj.keys() {
        if !INTROSPECTION_KEYS.contains(&k.as_str()) {
            return Err(super::unknown(&format!("{at}.{k}"), k, INTROSPECTION_KEYS));
        }
    }
    let string = |k: &str| -> Result<String, String> {
        match obj.get(k) {
            None => Err(format!("{at}.{k}: required")),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("{at}.{k}: expected a string")),
        }
    };
    Ok(IntrospectionOptions {
        url: string("url")?,
        client_id: string("client_id")?,
        secret_file: match obj.get("secret_file") {
            None => return Err(format!("{at}.secret_file: required")),
            Some(v) => super::file(v, &format!("{at}.secret_file"), dir)?,
        },
        max_age: match obj.get("cache") {
            None => crate::cli::INTROSPECTION_CACHE_DEFAULT,
            Some(v) => super::duration(v, &format!("{at}.cache"))?,
        },
    })
}

#[cfg(test)]
mod tests {
    use crate::cli::{self, Command, ReverseConfig};

    fn base(extra: &[&str]) -> ReverseConfig {
        let mut args = vec!["reverse", "--config", "x.json"];
        args.extend_from_slice(extra);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match cli::parse(&args).expect("cli").command {
            Command::Reverse(c) => *c,
            _ => panic!("not reverse"),
        }
    }

    const UP: &str = r#""upstreams": {"a": {"command": ["s"]}}"#;

    #[test]
    fn the_oauth_object() {
        let doc = format!(
            r#"{{"oauth": {{"issuer": "https://as.example", "audience": "https://r.example/mcp/a",
                "scopes": ["x"], "jwks_min_refetch": "5s", "ca_file": "ca.pem"}}, {UP}}}"#
        );
        let relay =
            super::super::parse(&doc, &base(&[]), Some(std::path::Path::new("/etc/r"))).unwrap();
        let o = relay.global.oauth.unwrap();
        assert_eq!(o.scopes, ["x"]);
        assert_eq!(o.jwks_min_refetch, std::time::Duration::from_secs(5));
        assert_eq!(o.ca_file.unwrap(), std::path::Path::new("/etc/r/ca.pem"));
    }

    #[test]
    fn the_introspection_object() {
        let doc = format!(
            r#"{{"oauth": {{"issuer": "https://as.example", "audience": "https://r.example/mcp/a",
                "introspection": {{"url": "https://as.example/introspect", "client_id": "relay",
                "secret_file": "secret", "cache": "1m"}}}}, {UP}}}"#
        );
        let relay =
            super::super::parse(&doc, &base(&[]), Some(std::path::Path::new("/etc/r"))).unwrap();
        let i = relay.global.oauth.unwrap().introspection.unwrap();
        assert_eq!(i.client_id, "relay");
        assert_eq!(i.secret_file, std::path::Path::new("/etc/r/secret"));
        assert_eq!(i.max_age, std::time::Duration::from_secs(60));
        let e = |intro: &str| {
            let doc = format!(
                r#"{{"oauth": {{"issuer": "https://a", "audience": "https://r", "introspection": {intro}}}, {UP}}}"#
            );
            super::super::parse(&doc, &base(&[]), None).unwrap_err()
        };
        assert!(e(r#"{"url": "https://a/i", "client_id": "x"}"#).contains("secret_file: required"));
        assert!(e(r#"{"url": "https://a/i", "secret_file": "s"}"#).contains("client_id: required"));
        assert!(
            e(r#"{"url": "https://a/i", "client_id": "x", "secret_file": "s", "secret": "y"}"#)
                .contains("oauth.introspection.secret: unknown key")
        );
        assert!(e("[]").contains("must be an object"));
    }

    #[test]
    fn oauth_object_errors() {
        let e =
            |doc: String, base: ReverseConfig| super::super::parse(&doc, &base, None).unwrap_err();
        assert!(
            e(
                format!(r#"{{"oauth": {{"issuer": "https://as.example"}}, {UP}}}"#),
                base(&[])
            )
            .contains("oauth.audience: required")
        );
        assert!(e(
            format!(r#"{{"oauth": {{"issuer": "https://a", "audience": "https://r", "scope": []}}, {UP}}}"#),
            base(&[])
        )
        .starts_with("oauth.scope: unknown key"));
        assert!(e(
            format!(r#"{{"oauth": {{"issuer": "https://a", "audience": "https://r"}}, "auth_token_file": "t", {UP}}}"#),
            base(&[])
        )
        .contains("exclude"));
        // The file's auth_token_file against the command line's --oauth-issuer.
        let flags = base(&[
            "--oauth-issuer",
            "https://a",
            "--oauth-audience",
            "https://r",
        ]);
        assert!(e(format!(r#"{{"auth_token_file": "t", {UP}}}"#), flags).contains("exclude"));
    }
}
