//! `reverse` as an OAuth protected resource (issue 14): `--oauth-*`.

use std::path::PathBuf;
use std::time::Duration;

use getopts::Options;

use super::dur;
use crate::auth::{IntrospectionOptions, OAuthOptions};

pub(super) fn add_oauth_options(o: &mut Options) {
    o.optopt(
        "",
        "oauth-issuer",
        "require JWT access tokens from this OAuth authorization server",
        "URL",
    );
    o.optopt(
        "",
        "oauth-audience",
        "the relay's public URL: tokens' required aud, published as resource",
        "URL",
    );
    o.optmulti(
        "",
        "oauth-scope",
        "scope every token must grant (repeatable; missing → 403)",
        "SCOPE",
    );
    o.optopt(
        "",
        "oauth-jwks-uri",
        "the issuer's JWKS URL, instead of its metadata's jwks_uri",
        "URL",
    );
    o.optopt(
        "",
        "oauth-ca-file",
        "PEM CA certificates for an https:// issuer (webpki roots are built in)",
        "FILE",
    );
    o.optopt(
        "",
        "oauth-clock-skew",
        "tolerance on exp and nbf (default 60s, at most 5m)",
        "DUR",
    );
    o.optopt(
        "",
        "oauth-jwks-min-refetch",
        "least time between JWKS refetches for an unknown kid (default 30s)",
        "DUR",
    );
    o.optopt(
        "",
        "oauth-introspection-url",
        "check opaque tokens with this RFC 7662 introspection endpoint",
        "URL",
    );
    o.optopt(
        "",
        "oauth-introspection-client-id",
        "the relay's client id at the introspection endpoint",
        "ID",
    );
    o.optopt(
        "",
        "oauth-introspection-secret-file",
        "file holding the relay's client secret for introspection",
        "FILE",
    );
    o.optopt(
        "",
        "oauth-introspection-cache",
        "longest an introspected token is trusted without asking again (default 5m)",
        "DUR",
    );
}

/// `--oauth-introspection-*`: all of url, client id and secret file, or none.
fn introspection(m: &getopts::Matches) -> Result<Option<IntrospectionOptions>, String> {
    let Some(url) = m.opt_str("oauth-introspection-url") else {
        for flag in [
            "oauth-introspection-client-id",
            "oauth-introspection-secret-file",
            "oauth-introspection-cache",
        ] {
            if m.opt_present(flag) {
                return Err(format!(
                    "--{flag} only applies with --oauth-introspection-url"
                ));
            }
        }
        return Ok(None);
    };
    let client_id = m
        .opt_str("oauth-introspection-client-id")
        .ok_or("--oauth-introspection-url needs --oauth-introspection-client-id")?;
    let secret_file = m
        .opt_str("oauth-introspection-secret-file")
        .ok_or("--oauth-introspection-url needs --oauth-introspection-secret-file")?;
    Ok(Some(IntrospectionOptions {
        url,
        client_id,
        secret_file: PathBuf::from(secret_file),
        max_age: dur(m, "oauth-introspection-cache", INTROSPECTION_CACHE_DEFAULT)?,
    }))
}

/// `--oauth-introspection-cache` default.
pub const INTROSPECTION_CACHE_DEFAULT: Duration = Duration::from_secs(300);

/// The protected-resource settings, if `--oauth-issuer` is given.
pub(super) fn oauth_options(m: &getopts::Matches) -> Result<Option<OAuthOptions>, String> {
    let Some(issuer) = m.opt_str("oauth-issuer") else {
        for flag in [
            "oauth-audience",
            "oauth-scope",
            "oauth-jwks-uri",
            "oauth-ca-file",
            "oauth-clock-skew",
            "oauth-jwks-min-refetch",
            "oauth-introspection-url",
            "oauth-introspection-client-id",
            "oauth-introspection-secret-file",
            "oauth-introspection-cache",
        ] {
            if m.opt_present(flag) {
                return Err(format!("--{flag} only applies with --oauth-issuer"));
            }
        }
        return Ok(None);
    };
    let audience = m
        .opt_str("oauth-audience")
        .ok_or("--oauth-issuer needs --oauth-audience (the relay's public URL)")?;
    if m.opt_present("auth-token-file") {
        return Err("--oauth-issuer and --auth-token-file exclude each other".into());
    }
    let opts = OAuthOptions {
        issuer,
        audience,
        scopes: m.opt_strs("oauth-scope"),
        jwks_uri: m.opt_str("oauth-jwks-uri"),
        ca_file: m.opt_str("oauth-ca-file").map(PathBuf::from),
        clock_skew: dur(m, "oauth-clock-skew", Duration::from_secs(60))?,
        jwks_min_refetch: dur(m, "oauth-jwks-min-refetch", Duration::from_secs(30))?,
        introspection: introspection(m)?,
    };
    check(&opts)?;
    Ok(Some(opts))
}

/// What both the flags and `--config` must satisfy.
pub fn check(o: &OAuthOptions) -> Result<(), String> {
    if o.clock_skew > Duration::from_secs(300) {
        return Err("oauth clock skew: at most 5m".into());
    }
    if let Some(s) = o.scopes.iter().find(|s| {
        s.is_empty()
            || s.bytes()
                .any(|b| b <= b' ' || b == b'"' || b == b'\\' || b >= 0x7f)
    }) {
        return Err(format!(
            "oauth scope {s:?}: not a scope token (RFC 6749 §3.3)"
        ));
    }
    if let Some(i) = &o.introspection {
        if i.client_id.is_empty() || i.client_id.bytes().any(|b| b < b' ' || b == 0x7f) {
            return Err("oauth introspection client id: empty or with control characters".into());
        }
        if i.max_age > Duration::from_secs(3600) {
            return Err("oauth introspection cache: at most 1h".into());
        }
    }
    crate::auth::Authority::new(o, std::time::Instant::now()).map(|_| ())
}

#[cfg(test)]
mod tests {
    use crate::cli::{Command, ReverseConfig, parse};

    fn reverse(extra: &[&str]) -> Result<ReverseConfig, String> {
        let mut args = vec!["reverse"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "server"]);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse(&args)?.command {
            Command::Reverse(c) => Ok(*c),
            _ => Err("not reverse".into()),
        }
    }

    #[test]
    fn oauth_flags() {
        let c = reverse(&[
            "--oauth-issuer",
            "https://as.example",
            "--oauth-audience",
            "https://relay.example/mcp",
            "--oauth-scope",
            "mcp:read",
            "--oauth-scope",
            "mcp:write",
            "--oauth-clock-skew",
            "30s",
        ])
        .unwrap();
        let o = c.oauth.unwrap();
        assert_eq!(o.issuer, "https://as.example");
        assert_eq!(o.scopes, ["mcp:read", "mcp:write"]);
        assert_eq!(o.clock_skew, std::time::Duration::from_secs(30));
        assert_eq!(o.jwks_min_refetch, std::time::Duration::from_secs(30));
        assert!(reverse(&[]).unwrap().oauth.is_none());
    }

    #[test]
    fn oauth_flag_errors() {
        let iss = ["--oauth-issuer", "https://as.example"];
        let aud = ["--oauth-audience", "https://relay.example/mcp"];
        let e = |a: &[&str]| reverse(a).unwrap_err();
        assert!(e(&iss).contains("--oauth-audience"));
        assert!(e(&aud).contains("only applies with --oauth-issuer"));
        assert!(e(&[&iss[..], &aud[..], &["--auth-token-file", "t"]].concat()).contains("exclude"));
        assert!(e(&[&iss[..], &aud[..], &["--oauth-scope", "a b"]].concat()).contains("scope"));
        assert!(e(&[&iss[..], &aud[..], &["--oauth-clock-skew", "10m"]].concat()).contains("5m"));
        assert!(
            e(&[
                "--oauth-issuer",
                "as.example",
                "--oauth-audience",
                "https://r/"
            ])
            .contains("issuer")
        );
    }

    #[test]
    fn introspection_flags() {
        let base = [
            "--oauth-issuer",
            "https://as.example",
            "--oauth-audience",
            "https://relay.example/mcp",
        ];
        let url = ["--oauth-introspection-url", "https://as.example/introspect"];
        let id = ["--oauth-introspection-client-id", "relay"];
        let secret = ["--oauth-introspection-secret-file", "/etc/relay/secret"];
        let c = reverse(&[&base[..], &url[..], &id[..], &secret[..]].concat()).unwrap();
        let i = c.oauth.unwrap().introspection.unwrap();
        assert_eq!(i.url, "https://as.example/introspect");
        assert_eq!(i.client_id, "relay");
        assert_eq!(i.secret_file, std::path::Path::new("/etc/relay/secret"));
        assert_eq!(i.max_age, std::time::Duration::from_secs(300));
        let c = reverse(
            &[
                &base[..],
                &url[..],
                &id[..],
                &secret[..],
                &["--oauth-introspection-cache", "30s"],
            ]
            .concat(),
        )
        .unwrap();
        assert_eq!(
            c.oauth.unwrap().introspection.unwrap().max_age,
            std::time::Duration::from_secs(30)
        );
        assert!(
            reverse(&base)
                .unwrap()
                .oauth
                .unwrap()
                .introspection
                .is_none()
        );

        let e = |a: &[&str]| reverse(a).unwrap_err();
        assert!(e(&[&base[..], &url[..], &secret[..]].concat()).contains("client-id"));
        assert!(e(&[&base[..], &url[..], &id[..]].concat()).contains("secret-file"));
        assert!(
            e(&[&base[..], &id[..]].concat())
                .contains("only applies with --oauth-introspection-url")
        );
        assert!(
            e(&[&url[..], &id[..], &secret[..]].concat())
                .contains("only applies with --oauth-issuer")
        );
        assert!(
            e(&[
                &base[..],
                &["--oauth-introspection-url", "ftp://x"],
                &id[..],
                &secret[..]
            ]
            .concat())
            .contains("introspection-url")
        );
        assert!(
            e(&[
                &base[..],
                &url[..],
                &id[..],
                &secret[..],
                &["--oauth-introspection-cache", "2h"]
            ]
            .concat())
            .contains("1h")
        );
    }
}
