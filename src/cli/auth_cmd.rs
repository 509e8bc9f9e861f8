//! `mcp-relay auth login|status|logout URL` (issue 14): the OAuth client's
//! stored authorizations, for people and scripts.

use std::path::PathBuf;

use getopts::Options;

use super::conventions::parse_options;
use super::{Cli, Command};
use crate::logging::Format;

pub const AUTH_USAGE: &str = "Usage: mcp-relay auth login URL [forward --url OPTIONS]
       mcp-relay auth status URL [--oauth-store DIR]
       mcp-relay auth logout URL [--oauth-store DIR] [--ca-file FILE]

login runs the authorization flow for the MCP server at URL and stores the
token (as `forward --url URL --oauth` would on its first 401; it first sends
URL a `ping` without a token, whose 401 may name the server's metadata,
else the well-known URLs are used); status prints
what is stored (issuer, resource, scopes, expiry; never a token); logout
revokes the stored tokens at the authorization server when it has a
revocation endpoint, and deletes them.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthAction {
    Status,
    Logout,
}

#[derive(Debug, Clone)]
pub struct AuthCommand {
    pub action: AuthAction,
    pub url: String,
    pub store_dir: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
}

fn help() -> Cli {
    Cli {
        command: Command::Help(AUTH_USAGE.into()),
        log_level: None,
        log_format: Format::Text,
    }
}

/// `args`: what follows `auth`.
pub(super) fn parse_auth(args: &[String]) -> Result<Cli, String> {
    let Some(action) = args.first() else {
        return Err(format!("auth needs login, status or logout\n{AUTH_USAGE}"));
    };
    if matches!(action.as_str(), "-h" | "--help" | "help") {
        return Ok(help());
    }
    let Some(url) = args.get(1).filter(|u| !u.starts_with('-')) else {
        return Err(format!(
            "auth {action} needs the server's URL\n{AUTH_USAGE}"
        ));
    };
    crate::upstream::url::Url::parse(url)?;
    let rest = &args[2..];
    let action = match action.as_str() {
        "login" => {
            let mut fwd = vec![
                "forward".to_string(),
                "--url".into(),
                url.clone(),
                "--oauth".into(),
            ];
            fwd.extend_from_slice(rest);
            let mut cli = super::parse(&fwd)?;
            if let Command::Forward(cfg) = &mut cli.command {
                cfg.login = true;
            }
            return Ok(cli);
        }
        "status" => AuthAction::Status,
        "logout" => AuthAction::Logout,
        other => {
            return Err(format!(
                "auth {other:?}: login, status or logout\n{AUTH_USAGE}"
            ));
        }
    };
    let mut o = Options::new();
    o.optopt("", "oauth-store", "directory of the token files", "DIR");
    o.optopt(
        "",
        "ca-file",
        "PEM CA certificates for an https:// authorization server",
        "FILE",
    );
    o.optopt("", "log-level", "error, warn, info, debug, trace", "LEVEL");
    o.optflag("h", "help", "print this help");
    let m = parse_options(&o, rest)?;
    if m.opt_present("help") {
        return Ok(help());
    }
    if !m.free.is_empty() {
        return Err(format!("auth: unexpected {:?}", m.free));
    }
    Ok(Cli {
        command: Command::Auth(AuthCommand {
            action,
            url: url.clone(),
            store_dir: m.opt_str("oauth-store").map(PathBuf::from),
            ca_file: m.opt_str("ca-file").map(PathBuf::from),
        }),
        log_level: m.opt_str("log-level"),
        log_format: Format::Text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::client::Grant;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn login_is_forward_with_the_flow_forced() {
        let cli = crate::cli::parse(&args(&[
            "auth",
            "login",
            "https://mcp.example/mcp",
            "--oauth-browser",
            "firefox --new-window",
            "--oauth-scope",
            "a b",
        ]))
        .unwrap();
        let Command::Forward(cfg) = cli.command else {
            panic!()
        };
        assert!(cfg.login);
        let o = cfg.oauth.unwrap();
        assert_eq!(o.browser, ["firefox", "--new-window"]);
        assert_eq!(o.scopes, ["a", "b"]);
        assert_eq!(o.grant, Grant::AuthorizationCode);
    }

    #[test]
    fn status_logout_and_mistakes() {
        let cli = crate::cli::parse(&args(&[
            "auth",
            "status",
            "http://h/mcp",
            "--oauth-store",
            "/x",
        ]))
        .unwrap();
        let Command::Auth(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.action, AuthAction::Status);
        assert_eq!(a.store_dir, Some(PathBuf::from("/x")));
        for bad in [
            &["auth"][..],
            &["auth", "status"],
            &["auth", "whoami", "http://h/"],
            &["auth", "status", "ftp://h/"],
            &["auth", "logout", "http://h/", "extra"],
            &["forward", "--oauth", "--", "server"],
            &["forward", "--url", "http://h/", "--oauth-grant", "password"],
            &[
                "forward",
                "--url",
                "http://h/",
                "--oauth-grant",
                "client_credentials",
            ],
            &[
                "forward",
                "--url",
                "http://h/",
                "--oauth-browser",
                "'unterminated",
            ],
        ] {
            assert!(crate::cli::parse(&args(bad)).is_err(), "{bad:?}");
        }
        let cli = crate::cli::parse(&args(&["forward", "--url", "http://h/"])).unwrap();
        let Command::Forward(cfg) = cli.command else {
            panic!()
        };
        assert!(cfg.oauth.is_none() && !cfg.login, "off unless asked for");
    }
}
