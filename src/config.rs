//! `reverse --config relay.json`: several upstreams, each a command or a URL,
//! each served on its own route (`/mcp/NAME`), each overriding any pool,
//! timeout or reconnection knob.
//!
//! ```json
//! {
//!   "listen": "127.0.0.1:8080",
//!   "response_timeout": "60s",
//!   "upstreams": {
//!     "everything": { "command": ["npx", "-y", "@modelcontextprotocol/server-everything"],
//!                     "pool": "session", "min_idle": 1 },
//!     "remote":     { "url": "https://mcp.example.com/mcp",
//!                     "header_env": { "authorization": "REMOTE_TOKEN" },
//!                     "connect_timeout": "3s" }
//!   }
//! }
//! ```
//!
//! Top-level keys set defaults for every upstream (and the listener-wide
//! settings); keys inside an upstream override them for that upstream only.
//! Command-line flags given with `--config` are the defaults beneath both.
//! Every error names the key and the reason, and the relay refuses to start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::cli::conventions::edit_distance;
use crate::cli::{
    HttpOptions, PoolMode, ReverseConfig, parse_duration, parse_reclaim_age, parse_size,
};
use crate::io::child::ServerCommand;
use crate::mcp::tools_filter::ToolFilter;

mod mcp_servers;
mod oauth;

/// Keys only meaningful for the whole relay.
const GLOBAL_KEYS: &[&str] = &[
    "listen",
    "admin",
    "max_clients",
    "max_header_size",
    "max_body",
    "client_header_timeout",
    "client_idle_timeout",
    "allow_origin",
    "auth_token_file",
    "oauth",
    "shutdown_grace",
    "drain_time",
    "sse_keepalive",
    "tls_cert",
    "tls_key",
];

/// Keys valid at the top level (as defaults) and in each upstream.
const UPSTREAM_KEYS: &[&str] = &[
    "pool",
    "max_connections",
    "min_idle",
    "max_waiting",
    "queue_timeout",
    "idle_timeout",
    "max_lifetime",
    "session_idle_timeout",
    "session_reclaim_age",
    "replay_buffer",
    "kill_grace",
    "response_timeout",
    "max_request_time",
    "max_message_size",
    "restart_base",
    "restart_max_delay",
    "connect_timeout",
    "request_timeout",
    "retries",
    "reconnect_base",
    "reconnect_max_elapsed",
    "ca_file",
    "headers",
    "header_env",
    "upstream_protocol",
    "tools",
];

/// Keys only valid inside an upstream.
const OWN_KEYS: &[&str] = &["command", "url", "env"];

/// The listener-wide configuration and one effective configuration per
/// upstream (name, route and every knob resolved).
#[derive(Debug)]
pub struct Relay {
    pub global: ReverseConfig,
    pub upstreams: Vec<ReverseConfig>,
}

pub fn load(path: &Path, base: &ReverseConfig) -> Result<Relay, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text, base, path.parent()).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses a config document. Relative file paths in it are resolved against
/// `dir` (the config file's directory).
pub fn parse(text: &str, base: &ReverseConfig, dir: Option<&Path>) -> Result<Relay, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let top = doc
        .as_object()
        .ok_or("the document must be a JSON object")?;
    for key in top.keys() {
        if key != "upstreams"
            && key != "mcpServers"
            && !GLOBAL_KEYS.contains(&key.as_str())
            && !UPSTREAM_KEYS.contains(&key.as_str())
        {
            return Err(unknown(key, key, &[]));
        }
    }
    let mut global = base.clone();
    apply_global(&mut global, top, dir)?;
    if top.contains_key("tls_cert") || top.contains_key("tls_key") {
        let file_of = |k: &str| top.get(k).map(|v| file(v, k, dir)).transpose();
        global.tls = crate::cli::tls_pair(
            file_of("tls_cert")?,
            file_of("tls_key")?,
            "tls_cert",
            "tls_key",
        )?;
    }
    if global.oauth.is_some() && global.auth_token_file.is_some() {
        return Err("oauth and auth_token_file exclude each other".into());
    }
    let mut defaults = global.clone();
    apply_upstream(&mut defaults, top, "", dir)?;
    // (where, name, entry) of every upstream, `upstreams` first.
    let mut entries: Vec<(String, &String, Map<String, Value>)> = Vec::new();
    let ups = match top.get("upstreams") {
        Some(v) => Some(
            v.as_object()
                .ok_or("upstreams: must be an object of name → upstream")?,
        ),
        None => None,
    };
    for (name, v) in ups.into_iter().flatten() {
        let at = format!("upstreams.{name}");
        let obj = v
            .as_object()
            .ok_or_else(|| format!("{at}: must be an object"))?;
        entries.push((at, name, obj.clone()));
    }
    if let Some(v) = top.get("mcpServers") {
        let servers = v
            .as_object()
            .ok_or("mcpServers: must be an object of name → server")?;
        for (name, v) in servers {
            let at = format!("mcpServers.{name}");
            if ups.is_some_and(|u| u.contains_key(name)) {
                return Err(format!("{at}: the name is also in upstreams"));
            }
            if let Some(obj) = mcp_servers::as_upstream(v, &at)? {
                entries.push((at, name, obj));
            }
        }
    }
    if ups.is_none() && !top.contains_key("mcpServers") {
        return Err(
            "upstreams: missing (an object of name → upstream, or a host's mcpServers object)"
                .into(),
        );
    }
    if entries.is_empty() {
        return Err("upstreams: at least one upstream is needed".into());
    }
    let mut upstreams = Vec::new();
    for (at, name, obj) in &entries {
        upstreams.push(upstream(name, at, obj, top, &defaults, dir)?);
    }
    Ok(Relay { global, upstreams })
}

/// One upstream's effective configuration: `defaults` (the command line
/// and the file's top level) overridden by its entry `obj`, found at `at`.
fn upstream(
    name: &str,
    at: &str,
    obj: &Map<String, Value>,
    top: &Map<String, Value>,
    defaults: &ReverseConfig,
    dir: Option<&Path>,
) -> Result<ReverseConfig, String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "{at}: the name is used in the route /mcp/NAME; use letters, digits, - and _"
        ));
    }
    for key in obj.keys() {
        if GLOBAL_KEYS.contains(&key.as_str()) {
            return Err(format!(
                "{at}.{key}: applies to the whole relay; set it at the top level"
            ));
        }
        if !UPSTREAM_KEYS.contains(&key.as_str()) && !OWN_KEYS.contains(&key.as_str()) {
            let host = if at.starts_with("mcpServers.") {
                mcp_servers::HOST_KEYS
            } else if mcp_servers::HOST_KEYS.contains(&key.as_str()) {
                return Err(format!(
                    "{at}.{key}: unknown key (a key of mcpServers entries; \
                     in upstreams, command is the whole argv array)"
                ));
            } else {
                &[]
            };
            return Err(unknown(&format!("{at}.{key}"), key, host));
        }
    }
    let mut cfg = defaults.clone();
    cfg.name = name.to_owned();
    cfg.path = format!("/mcp/{name}");
    // Pool sizing defaults follow the upstream's own pool mode unless
    // the file sets them.
    let pool_set = obj.contains_key("pool") || top.contains_key("pool");
    apply_upstream(&mut cfg, obj, &format!("{at}."), dir)?;
    if pool_set && !obj.contains_key("max_connections") && !top.contains_key("max_connections") {
        cfg.max_connections = if cfg.pool == PoolMode::Session { 16 } else { 2 };
    }
    if !obj.contains_key("max_waiting") && !top.contains_key("max_waiting") {
        cfg.max_waiting = cfg.max_connections.saturating_mul(4);
    }
    match (obj.get("command"), obj.get("url")) {
        (Some(_), Some(_)) => {
            return Err(format!("{at}: give either command or url, not both"));
        }
        (None, None) => {
            return Err(format!("{at}: needs a command (array of strings) or a url"));
        }
        (Some(c), None) => {
            let argv = c
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| format!("{at}.command: must be a non-empty array of strings"))?;
            let argv = argv
                .iter()
                .map(|s| {
                    s.as_str().map(str::to_string).ok_or_else(|| {
                        format!("{at}.command: must be a non-empty array of strings")
                    })
                })
                .collect::<Result<_, _>>()?;
            cfg.command = ServerCommand {
                argv,
                env: match obj.get("env") {
                    Some(v) => env(v, &format!("{at}.env"))?,
                    None => Vec::new(),
                },
            };
            if obj.keys().any(|k| HTTP_ONLY.contains(&k.as_str())) {
                let k = obj
                    .keys()
                    .find(|k| HTTP_ONLY.contains(&k.as_str()))
                    .cloned()
                    .unwrap_or_default();
                return Err(format!("{at}.{k}: only applies to a url upstream"));
            }
            cfg.http = None;
        }
        (None, Some(u)) => {
            let url = u
                .as_str()
                .ok_or_else(|| format!("{at}.url: must be a string"))?;
            if obj.contains_key("env") {
                return Err(format!("{at}.env: only applies to a command server"));
            }
            if obj.contains_key("session_reclaim_age") {
                return Err(format!(
                    "{at}.session_reclaim_age: only applies to a command upstream"
                ));
            }
            crate::upstream::url::Url::parse(url).map_err(|e| format!("{at}.url: {e}"))?;
            cfg.command = ServerCommand::default();
            let mut h = http_defaults(defaults, url);
            apply_http(&mut h, top, "", dir)?;
            apply_http(&mut h, obj, &format!("{at}."), dir)?;
            h.max_connections = cfg.max_connections;
            h.idle_timeout = cfg.idle_timeout;
            cfg.http = Some(h);
        }
    }
    if cfg.min_idle > cfg.max_connections {
        return Err(format!(
            "{at}.min_idle: {} is more than max_connections {}",
            cfg.min_idle, cfg.max_connections
        ));
    }
    if cfg.max_connections == 0 {
        return Err(format!("{at}.max_connections: must be at least 1"));
    }
    if cfg.restart_base.is_zero() || cfg.restart_max_delay < cfg.restart_base {
        return Err(format!(
            "{at}.restart_base: must be > 0 and <= restart_max_delay"
        ));
    }
    Ok(cfg)
}

/// Keys that make sense only for URL upstreams.
const HTTP_ONLY: &[&str] = &[
    "connect_timeout",
    "request_timeout",
    "retries",
    "reconnect_base",
    "reconnect_max_elapsed",
    "ca_file",
    "headers",
    "header_env",
];

/// "unknown key", with the closest known key (of the relay's, and `extra`).
fn unknown(at: &str, key: &str, extra: &[&str]) -> String {
    let all = GLOBAL_KEYS
        .iter()
        .chain(UPSTREAM_KEYS)
        .chain(OWN_KEYS)
        .chain(extra);
    match all
        .min_by_key(|k| edit_distance(k, key))
        .filter(|k| edit_distance(k, key) <= 3)
    {
        Some(k) => format!("{at}: unknown key (did you mean {k}?)"),
        None => format!("{at}: unknown key"),
    }
}

fn duration(v: &Value, at: &str) -> Result<Duration, String> {
    let s = v.as_str().ok_or_else(|| {
        format!("{at}: expected a duration string like \"250ms\", \"10s\", \"5m\"")
    })?;
    parse_duration(s).map_err(|e| format!("{at}: {e}"))
}

/// `env`: an object of variable name → value, set for the server's process
/// on top of the relay's environment.
fn env(v: &Value, at: &str) -> Result<Vec<(String, String)>, String> {
    let map = v
        .as_object()
        .ok_or_else(|| format!("{at}: expected an object of variable name → value"))?;
    map.iter()
        .map(|(name, val)| {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(format!("{at}.{name}: not a valid variable name"));
            }
            let val = val
                .as_str()
                .ok_or_else(|| format!("{at}.{name}: expected a string"))?;
            if val.contains('\0') {
                return Err(format!("{at}.{name}: contains a NUL byte"));
            }
            Ok((name.clone(), val.to_owned()))
        })
        .collect()
}

fn size(v: &Value, at: &str) -> Result<usize, String> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| format!("{at}: expected a size in bytes or a string like \"16MiB\"")),
        Value::String(s) => parse_size(s).map_err(|e| format!("{at}: {e}")),
        _ => Err(format!(
            "{at}: expected a size in bytes or a string like \"16MiB\""
        )),
    }
}

fn count(v: &Value, at: &str) -> Result<usize, String> {
    v.as_u64()
        .map(|n| n as usize)
        .ok_or_else(|| format!("{at}: expected a non-negative integer"))
}

fn file(v: &Value, at: &str, dir: Option<&Path>) -> Result<PathBuf, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("{at}: expected a file path"))?;
    let p = PathBuf::from(s);
    Ok(match dir {
        Some(d) if p.is_relative() => d.join(p),
        _ => p,
    })
}

fn apply_global(
    cfg: &mut ReverseConfig,
    obj: &Map<String, Value>,
    dir: Option<&Path>,
) -> Result<(), String> {
    for (k, v) in obj {
        let at = k.as_str();
        match at {
            "listen" | "admin" => {
                let addr = v
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("{at}: expected \"IP:PORT\""))?;
                if at == "listen" {
                    cfg.listen = addr;
                } else {
                    cfg.admin = Some(addr);
                }
            }
            "max_clients" => cfg.max_clients = count(v, at)?.max(1),
            "max_header_size" => cfg.max_header_size = size(v, at)?,
            "max_body" => cfg.max_body = size(v, at)?,
            "client_header_timeout" => cfg.client_header_timeout = duration(v, at)?,
            "client_idle_timeout" => cfg.client_idle_timeout = duration(v, at)?,
            "shutdown_grace" => cfg.shutdown_grace = duration(v, at)?,
            "drain_time" => cfg.drain_time = duration(v, at)?,
            "sse_keepalive" => cfg.sse_keepalive = duration(v, at)?,
            "auth_token_file" => cfg.auth_token_file = Some(file(v, at, dir)?),
            // Checked as a pair by `parse`.
            "tls_cert" | "tls_key" => {}
            "oauth" => cfg.oauth = Some(oauth::parse(v, at, dir)?),
            "allow_origin" => {
                let list = v
                    .as_array()
                    .ok_or_else(|| format!("{at}: expected an array of origins"))?;
                cfg.allow_origins = list
                    .iter()
                    .map(|o| {
                        o.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| format!("{at}: expected an array of origins"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn apply_upstream(
    cfg: &mut ReverseConfig,
    obj: &Map<String, Value>,
    prefix: &str,
    _dir: Option<&Path>,
) -> Result<(), String> {
    for (k, v) in obj {
        let at = format!("{prefix}{k}");
        let at = at.as_str();
        match k.as_str() {
            "pool" => {
                cfg.pool = match v.as_str() {
                    Some("session") => PoolMode::Session,
                    Some("shared") => PoolMode::Shared,
                    _ => return Err(format!("{at}: expected \"session\" or \"shared\"")),
                }
            }
            "max_connections" => cfg.max_connections = count(v, at)?,
            "min_idle" => cfg.min_idle = count(v, at)?,
            "max_waiting" => cfg.max_waiting = count(v, at)?,
            "queue_timeout" => cfg.queue_timeout = duration(v, at)?,
            "idle_timeout" => cfg.idle_timeout = duration(v, at)?,
            "max_lifetime" => {
                let d = duration(v, at)?;
                cfg.max_lifetime = (!d.is_zero()).then_some(d);
            }
            "session_idle_timeout" => cfg.session_idle_timeout = duration(v, at)?,
            "session_reclaim_age" => {
                let s = v.as_str().ok_or_else(|| {
                    format!("{at}: expected a duration string like \"2s\", or \"never\"")
                })?;
                cfg.session_reclaim_age = parse_reclaim_age(s).map_err(|e| format!("{at}: {e}"))?;
            }
            "replay_buffer" => cfg.replay_buffer = count(v, at)?,
            "kill_grace" => cfg.kill_grace = duration(v, at)?,
            "response_timeout" => cfg.response_timeout = duration(v, at)?,
            "max_request_time" => cfg.max_request_time = duration(v, at)?,
            "max_message_size" => {
                cfg.max_message_size = size(v, at)?;
                if cfg.max_message_size < 1024 {
                    return Err(format!("{at}: must be at least 1KiB"));
                }
            }
            "restart_base" => cfg.restart_base = duration(v, at)?,
            "restart_max_delay" => cfg.restart_max_delay = duration(v, at)?,
            "upstream_protocol" => {
                let s = v
                    .as_str()
                    .ok_or_else(|| format!("{at}: expected \"legacy\", \"auto\" or \"modern\""))?;
                cfg.upstream_protocol = crate::mcp::era::UpstreamProtocol::parse(s)
                    .map_err(|e| format!("{at}: {e}"))?;
            }
            "tools" => cfg.tools = tools(v, at)?,
            _ => {}
        }
    }
    Ok(())
}

/// `"tools": {"allow": [GLOB...], "deny": [GLOB...]}`: the upstream's tool
/// filter. Set in an upstream, it replaces the top-level one (and the
/// flags') as a whole.
fn tools(v: &Value, at: &str) -> Result<ToolFilter, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{at}: expected an object with allow and/or deny"))?;
    let mut lists = [Vec::new(), Vec::new()];
    for (k, list) in obj {
        let slot = match k.as_str() {
            "allow" => 0,
            "deny" => 1,
            _ => {
                let hint = ["allow", "deny"]
                    .into_iter()
                    .find(|w| edit_distance(w, k) <= 2)
                    .map(|w| format!(" (did you mean {w}?)"))
                    .unwrap_or_default();
                return Err(format!("{at}.{k}: unknown key{hint}"));
            }
        };
        let globs = list
            .as_array()
            .ok_or_else(|| format!("{at}.{k}: expected an array of tool name globs"))?;
        for g in globs {
            let g = g
                .as_str()
                .ok_or_else(|| format!("{at}.{k}: expected an array of tool name globs"))?;
            lists[slot].push(g.to_owned());
        }
    }
    let [allow, deny] = lists;
    ToolFilter::new(&allow, &deny).map_err(|e| format!("{at}: {e}"))
}

fn http_defaults(defaults: &ReverseConfig, url: &str) -> HttpOptions {
    match &defaults.http {
        Some(h) => HttpOptions {
            url: url.to_string(),
            ..h.clone()
        },
        None => HttpOptions {
            url: url.to_string(),
            headers: Vec::new(),
            ca_file: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            retries: 2,
            reconnect_base: Duration::from_millis(250),
            reconnect_max_elapsed: Duration::from_secs(300),
            max_connections: defaults.max_connections,
            idle_timeout: defaults.idle_timeout,
        },
    }
}

fn apply_http(
    h: &mut HttpOptions,
    obj: &Map<String, Value>,
    prefix: &str,
    dir: Option<&Path>,
) -> Result<(), String> {
    for (k, v) in obj {
        let at = format!("{prefix}{k}");
        let at = at.as_str();
        match k.as_str() {
            "connect_timeout" => h.connect_timeout = duration(v, at)?,
            "request_timeout" => h.request_timeout = duration(v, at)?,
            "retries" => {
                h.retries = u32::try_from(count(v, at)?).map_err(|_| format!("{at}: too large"))?
            }
            "reconnect_base" => {
                h.reconnect_base = duration(v, at)?;
                if !(Duration::from_millis(100)..=Duration::from_millis(500))
                    .contains(&h.reconnect_base)
                {
                    return Err(format!("{at}: must be between 100ms and 500ms"));
                }
            }
            "reconnect_max_elapsed" => h.reconnect_max_elapsed = duration(v, at)?,
            "ca_file" => h.ca_file = Some(file(v, at, dir)?),
            "headers" | "header_env" => {
                let map = v
                    .as_object()
                    .ok_or_else(|| format!("{at}: expected an object of header name → value"))?;
                for (name, val) in map {
                    let val = val
                        .as_str()
                        .ok_or_else(|| format!("{at}.{name}: expected a string"))?;
                    let value = if k == "header_env" {
                        std::env::var(val).map_err(|_| {
                            format!("{at}.{name}: environment variable {val:?} is not set")
                        })?
                    } else {
                        val.to_string()
                    };
                    let header = crate::cli::checked_header(name, &value)
                        .map_err(|e| format!("{at}.{name}: {e}"))?;
                    h.headers.retain(|(n, _)| *n != header.0);
                    h.headers.push(header);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
