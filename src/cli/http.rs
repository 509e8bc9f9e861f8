//! The flags of an HTTP(S) upstream (`--url` and its knobs), shared by
//! forward and reverse.

use std::path::PathBuf;
use std::time::Duration;

use getopts::Options;

use super::{count, dur};

/// How to reach an MCP server over HTTP(S) (`--url` and its knobs).
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub url: String,
    /// `--header 'Name: value'` and `--header-env 'Name=VAR'`, resolved.
    pub headers: Vec<(String, String)>,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub retries: u32,
    pub reconnect_base: Duration,
    pub reconnect_max_elapsed: Duration,
    /// Connections carrying requests at once.
    pub max_connections: usize,
    /// Keep-alive connections idle this long are closed; zero = never.
    pub idle_timeout: Duration,
}

/// Flags for an HTTP(S) upstream, shared by forward and reverse.
pub(super) fn add_http_options(o: &mut Options) {
    o.optopt(
        "",
        "url",
        "the MCP server's Streamable HTTP (or legacy SSE) URL, instead of a command",
        "URL",
    );
    o.optmulti(
        "",
        "header",
        "extra request header to the upstream (repeatable)",
        "'NAME: VALUE'",
    );
    o.optmulti(
        "",
        "header-env",
        "header whose value comes from an environment variable (kept out of ps)",
        "NAME=VAR",
    );
    o.optopt(
        "",
        "ca-file",
        "PEM file of extra CA certificates to trust (webpki roots are built in)",
        "FILE",
    );
    o.optopt(
        "",
        "connect-timeout",
        "TCP connect + TLS handshake (default 5s)",
        "DUR",
    );
    o.optopt(
        "",
        "request-timeout",
        "time to send a request completely (default 10s)",
        "DUR",
    );
    o.optopt(
        "",
        "retries",
        "retries of a request no byte of which reached the upstream (default 2)",
        "N",
    );
    o.optopt(
        "",
        "reconnect-base",
        "first SSE reconnect delay bound, 100ms..500ms (default 250ms)",
        "DUR",
    );
    o.optopt(
        "",
        "reconnect-max-elapsed",
        "give up reconnecting after this long of failure (default 5m)",
        "DUR",
    );
}

pub(super) fn http_options(m: &getopts::Matches) -> Result<Option<HttpOptions>, String> {
    let Some(url) = m.opt_str("url") else {
        for flag in [
            "header",
            "header-env",
            "ca-file",
            "connect-timeout",
            "request-timeout",
            "retries",
            "reconnect-base",
            "reconnect-max-elapsed",
        ] {
            if m.opt_present(flag) {
                return Err(format!("--{flag} only applies with --url"));
            }
        }
        return Ok(None);
    };
    let mut headers = Vec::new();
    for h in m.opt_strs("header") {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("--header {h:?}: expected 'Name: value'"))?;
        headers.push(checked_header(name.trim(), value.trim())?);
    }
    for h in m.opt_strs("header-env") {
        let (name, var) = h
            .split_once('=')
            .ok_or_else(|| format!("--header-env {h:?}: expected 'Name=ENV_VAR'"))?;
        let value = std::env::var(var.trim())
            .map_err(|_| format!("--header-env {h:?}: environment variable {var:?} is not set"))?;
        headers.push(checked_header(name.trim(), value.trim())?);
    }
    let reconnect_base = dur(m, "reconnect-base", Duration::from_millis(250))?;
    if !(Duration::from_millis(100)..=Duration::from_millis(500)).contains(&reconnect_base) {
        return Err("--reconnect-base: must be between 100ms and 500ms".into());
    }
    let retries = count(m, "retries", 2)?;
    Ok(Some(HttpOptions {
        url,
        headers,
        ca_file: m.opt_str("ca-file").map(PathBuf::from),
        connect_timeout: dur(m, "connect-timeout", Duration::from_secs(5))?,
        request_timeout: dur(m, "request-timeout", Duration::from_secs(10))?,
        retries: u32::try_from(retries).map_err(|_| "--retries: too large".to_string())?,
        reconnect_base,
        reconnect_max_elapsed: dur(m, "reconnect-max-elapsed", Duration::from_secs(300))?,
        // forward defines these for --url; reverse shares its pool flags.
        max_connections: count(m, "max-connections", 8)?.max(1),
        idle_timeout: dur(m, "idle-timeout", Duration::from_secs(60))?,
    }))
}

/// Header names are tokens and values carry no line breaks, so a flag cannot
/// smuggle extra headers into upstream requests.
pub fn checked_header(name: &str, value: &str) -> Result<(String, String), String> {
    let token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err(format!("header name {name:?} is not a valid HTTP token"));
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(format!("header {name}: value contains a line break"));
    }
    Ok((name.to_ascii_lowercase(), value.to_string()))
}
