//! `reverse` as an OAuth protected resource (issue 14): `--oauth-*`.

use std::path::PathBuf;
use std::time::Duration;

use getopts::Options;

use super::dur;
use crate::auth::OAuthOptions;

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
}

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
}
