//! `forward --url` as an OAuth client (issue 14): `--oauth` and
//! `--oauth-*`.

use std::path::PathBuf;

use getopts::Options;

use crate::auth::client::{ClientOptions, Grant, split_words};

pub(super) fn add_client_options(o: &mut Options) {
    o.optflag(
        "",
        "oauth",
        "with --url: answer the upstream's 401 with the OAuth authorization flow",
    );
    o.optopt(
        "",
        "oauth-browser",
        "command that opens the authorization URL, given as its last argument (default xdg-open)",
        "CMD",
    );
    o.optopt(
        "",
        "oauth-store",
        "directory of the token files (default $XDG_CONFIG_HOME/mcp-relay/oauth)",
        "DIR",
    );
    o.optopt("", "oauth-client-id", "a pre-registered OAuth client", "ID");
    o.optopt(
        "",
        "oauth-client-secret-file",
        "file holding the pre-registered client's secret",
        "FILE",
    );
    o.optopt(
        "",
        "oauth-client-metadata-url",
        "https URL of this client's metadata document, used as its client_id where supported",
        "URL",
    );
    o.optopt(
        "",
        "oauth-grant",
        "authorization_code (default) or client_credentials",
        "GRANT",
    );
    o.optmulti(
        "",
        "oauth-scope",
        "scope to ask for when the upstream names none (repeatable)",
        "SCOPE",
    );
}

const FLAGS: [&str; 7] = [
    "oauth-browser",
    "oauth-store",
    "oauth-client-id",
    "oauth-client-secret-file",
    "oauth-client-metadata-url",
    "oauth-grant",
    "oauth-scope",
];

/// The client settings, if `--oauth` (or any `--oauth-*`) is given.
pub(super) fn client_options(
    m: &getopts::Matches,
    has_url: bool,
) -> Result<Option<ClientOptions>, String> {
    if !m.opt_present("oauth") && !FLAGS.iter().any(|f| m.opt_present(f)) {
        return Ok(None);
    }
    if !has_url {
        return Err("--oauth and --oauth-* apply to forward only with --url".into());
    }
    let mut o = ClientOptions::default();
    if let Some(b) = m.opt_str("oauth-browser") {
        o.browser = split_words(&b).map_err(|e| format!("--oauth-browser: {e}"))?;
    }
    o.store_dir = m.opt_str("oauth-store").map(PathBuf::from);
    o.client_id = m.opt_str("oauth-client-id");
    if let Some(f) = m.opt_str("oauth-client-secret-file") {
        let s = std::fs::read_to_string(&f)
            .map_err(|e| format!("--oauth-client-secret-file {f}: {e}"))?;
        let s = s.trim().to_string();
        if s.is_empty() {
            return Err(format!("--oauth-client-secret-file {f}: empty"));
        }
        o.client_secret = Some(s);
    }
    if o.client_secret.is_some() && o.client_id.is_none() {
        return Err("--oauth-client-secret-file needs --oauth-client-id".into());
    }
    if let Some(u) = m.opt_str("oauth-client-metadata-url") {
        crate::upstream::url::Url::parse(&u)
            .map_err(|e| format!("--oauth-client-metadata-url: {e}"))?;
        o.client_metadata_url = Some(u);
    }
    o.grant = match m.opt_str("oauth-grant").as_deref() {
        None | Some("authorization_code") => Grant::AuthorizationCode,
        Some("client_credentials") => Grant::ClientCredentials,
        Some(g) => {
            return Err(format!(
                "--oauth-grant {g:?}: authorization_code or client_credentials"
            ));
        }
    };
    if o.grant == Grant::ClientCredentials && o.client_secret.is_none() {
        return Err(
            "--oauth-grant client_credentials needs --oauth-client-id and --oauth-client-secret-file"
                .into(),
        );
    }
    o.scopes = m
        .opt_strs("oauth-scope")
        .iter()
        .flat_map(|s| s.split_whitespace().map(str::to_owned))
        .collect();
    Ok(Some(o))
}
