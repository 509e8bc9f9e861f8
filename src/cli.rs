//! Command line: `mcp-relay MODE [OPTIONS] -- COMMAND [ARG...]`.
//!
//! Durations take a unit (`250ms`, `10s`, `5m`, `1h`); `0` means "off" where a
//! flag says so. Sizes take an optional binary unit (`4096`, `64KiB`, `16MiB`).

use std::path::PathBuf;
use std::time::Duration;

use getopts::Options;

use crate::io::child::ServerCommand;
use crate::logging::{self, Format};
use crate::mcp::tools_filter::ToolFilter;

mod auth_cmd;
pub(crate) mod conventions;
mod http;
mod oauth;
mod oauth_client;
pub use crate::mcp::era::UpstreamProtocol;
pub use auth_cmd::{AuthAction, AuthCommand};
use oauth_client::{add_client_options, client_options};
mod tools;
use conventions::{DURATION_UNITS, Mode, parse_options};
pub use http::{HttpOptions, checked_header};
use http::{add_http_options, http_options};
pub use oauth::INTROSPECTION_CACHE_DEFAULT;
pub use oauth::check as check_oauth;
use oauth::{add_oauth_options, oauth_options};
mod tls;
pub use tls::pair as tls_pair;
use tls::{add_tls_options, tls_files};

pub const USAGE: &str = "Usage: mcp-relay forward [OPTIONS] -- COMMAND [ARG...]

Relays MCP (newline-delimited JSON-RPC) between this process's stdin/stdout
and a server process it spawns.";

pub const REVERSE_USAGE: &str = "Usage: mcp-relay reverse [OPTIONS] -- COMMAND [ARG...]

Serves MCP over HTTP (Streamable HTTP, and legacy HTTP+SSE) in front of a pool
of COMMAND processes speaking MCP over stdio.";

#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// The server command; empty when `http` is set.
    pub command: ServerCommand,
    /// `--url`: the server is remote.
    pub http: Option<HttpOptions>,
    /// Name used in logs and in error `data.upstream`.
    pub name: String,
    pub max_message_size: usize,
    /// Zero disables the per-request response timeout.
    pub response_timeout: Duration,
    /// Zero disables the overall cap.
    pub max_request_time: Duration,
    pub kill_grace: Duration,
    pub restart: bool,
    pub restart_base: Duration,
    pub restart_max_delay: Duration,
    pub record: Option<PathBuf>,
    /// `--upstream-protocol`: the era spoken to the server.
    pub upstream_protocol: UpstreamProtocol,
    /// `--allow-tool` / `--deny-tool`.
    pub tools: ToolFilter,
    /// `--oauth`: the relay as an OAuth client of the `--url` upstream.
    pub oauth: Option<crate::auth::client::ClientOptions>,
    /// `auth login`: run the authorization flow, store the token, exit.
    pub login: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// One process per client session.
    Session,
    /// Processes initialized once by the relay and shared by many sessions.
    Shared,
}

#[derive(Debug, Clone)]
pub struct ReverseConfig {
    /// The server command; empty when `http` is set.
    pub command: ServerCommand,
    /// `--url`: relay to an HTTP(S) MCP server instead of processes.
    pub http: Option<HttpOptions>,
    /// `--config`: several upstreams, each on `/mcp/NAME`.
    pub config: Option<PathBuf>,
    pub name: String,
    pub listen: std::net::SocketAddr,
    pub admin: Option<std::net::SocketAddr>,
    /// `--tls-cert` / `--tls-key`: HTTPS on `listen` (not on `admin`).
    pub tls: Option<crate::io::transport::TlsFiles>,
    pub path: String,
    pub pool: PoolMode,
    pub max_connections: usize,
    pub min_idle: usize,
    pub max_waiting: usize,
    pub queue_timeout: Duration,
    /// Zero: idle processes are never closed for idleness.
    pub idle_timeout: Duration,
    pub max_lifetime: Option<Duration>,
    pub session_idle_timeout: Duration,
    /// Session mode, pool full and a session waiting: an idle session (no
    /// request in flight, no open stream) idle at least this long is ended
    /// and its process goes to the waiter. `None`: never.
    pub session_reclaim_age: Option<Duration>,
    pub max_header_size: usize,
    pub max_body: usize,
    pub client_header_timeout: Duration,
    pub client_idle_timeout: Duration,
    pub max_clients: usize,
    pub replay_buffer: usize,
    pub allow_origins: Vec<String>,
    pub auth_token_file: Option<PathBuf>,
    /// `--oauth-issuer` and its flags: bearer JWTs instead of static tokens.
    pub oauth: Option<crate::auth::OAuthOptions>,
    pub shutdown_grace: Duration,
    /// After SIGTERM, keep serving (healthz 503) at least this long, even
    /// with nothing in flight, so a load balancer sees the drain.
    pub drain_time: Duration,
    /// A `: keep-alive` comment on open SSE streams this often (zero: never),
    /// so proxies with short idle timeouts keep quiet streams open.
    pub sse_keepalive: Duration,
    pub kill_grace: Duration,
    pub response_timeout: Duration,
    pub max_request_time: Duration,
    pub max_message_size: usize,
    pub restart_base: Duration,
    pub restart_max_delay: Duration,
    /// `--upstream-protocol` (per upstream with `--config`).
    pub upstream_protocol: UpstreamProtocol,
    /// `--allow-tool` / `--deny-tool`, or `"tools"` in `--config`.
    pub tools: ToolFilter,
}

#[derive(Debug)]
pub enum Command {
    Forward(Box<ForwardConfig>),
    Reverse(Box<ReverseConfig>),
    /// `auth status|logout URL`.
    Auth(AuthCommand),
    Help(String),
    Version,
}

#[derive(Debug)]
pub struct Cli {
    pub command: Command,
    pub log_level: Option<String>,
    /// `--log-format`: `text` (default) or `json`.
    pub log_format: Format,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?}: {DURATION_UNITS}"))?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "" if value == 0.0 => 0.0,
        "" => return Err(format!("duration {s:?} needs a unit: {DURATION_UNITS}")),
        _ => return Err(format!("bad duration {s:?}: {DURATION_UNITS}")),
    };
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=10.0 * 365.0 * 86400.0).contains(&secs) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Default `--session-reclaim-age`: below the default `--queue-timeout`, so
/// a waiter is served with time left to start its process; long enough that
/// a client pausing between quick calls keeps its session in a burst.
pub const DEFAULT_RECLAIM_AGE: Duration = Duration::from_secs(2);

/// `--session-reclaim-age`: a duration (`0`: any idle session), or `never`.
pub fn parse_reclaim_age(s: &str) -> Result<Option<Duration>, String> {
    match s.trim() {
        "never" => Ok(None),
        d => parse_duration(d)
            .map(Some)
            .map_err(|e| format!("{e}, or never")),
    }
}

pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: usize = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        _ => return Err(format!("bad size unit in {s:?} (use B, KiB, MiB, GiB)")),
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("size {s:?} out of range"))
}

fn forward_options() -> Options {
    let mut o = Options::new();
    o.optopt(
        "",
        "max-message-size",
        "largest message relayed (default 16MiB)",
        "SIZE",
    );
    o.optopt(
        "",
        "response-timeout",
        "per-request reply timeout, restarted by progress (default 120s, 0 = off)",
        "DUR",
    );
    o.optopt(
        "",
        "max-request-time",
        "cap on a request's life however much progress it reports (default 30m, 0 = off)",
        "DUR",
    );
    o.optopt(
        "",
        "kill-grace",
        "wait after closing the server's stdin, and after SIGTERM (default 2s)",
        "DUR",
    );
    o.optflag(
        "",
        "restart",
        "respawn the server if it exits, replaying the client's initialize",
    );
    o.optopt(
        "",
        "restart-base",
        "first restart delay bound; doubles per failure (default 250ms)",
        "DUR",
    );
    o.optopt(
        "",
        "restart-max-delay",
        "cap on the restart delay (default 30s)",
        "DUR",
    );
    o.optopt(
        "",
        "record",
        "append every message with a timestamp and direction to FILE",
        "FILE",
    );
    o.optopt(
        "",
        "name",
        "upstream name in logs and errors (default: command's file name)",
        "NAME",
    );
    logging::format::cli_options(&mut o);
    o.optopt(
        "",
        "max-connections",
        "with --url: upstream connections carrying requests at once (default 8)",
        "N",
    );
    o.optopt(
        "",
        "idle-timeout",
        "with --url: close upstream keep-alive connections idle this long (default 60s)",
        "DUR",
    );
    add_http_options(&mut o);
    add_client_options(&mut o);
    add_era_option(&mut o);
    tools::add_options(&mut o);
    o.optflag("h", "help", "print this help");
    o
}

/// `--upstream-protocol`, shared by forward and reverse (docs/eras.md).
fn add_era_option(o: &mut Options) {
    o.optopt(
        "",
        "upstream-protocol",
        "era spoken to the server: legacy (initialize), modern (2026-07-28), auto (probe once; default)",
        "ERA",
    );
}

fn upstream_protocol(m: &getopts::Matches) -> Result<UpstreamProtocol, String> {
    match m.opt_str("upstream-protocol") {
        None => Ok(UpstreamProtocol::default()),
        Some(v) => UpstreamProtocol::parse(&v).map_err(|e| format!("--upstream-protocol: {e}")),
    }
}

fn dur(m: &getopts::Matches, name: &str, default: Duration) -> Result<Duration, String> {
    match m.opt_str(name) {
        Some(v) => parse_duration(&v).map_err(|e| format!("--{name}: {e}")),
        None => Ok(default),
    }
}

pub fn parse(args: &[String]) -> Result<Cli, String> {
    match conventions::mode(args.first().map(String::as_str))? {
        Mode::Help => {
            return Ok(Cli {
                command: Command::Help(format!(
                    "{}\n{}",
                    forward_options().usage(USAGE),
                    reverse_options().usage(REVERSE_USAGE)
                )),
                log_level: None,
                log_format: Format::Text,
            });
        }
        Mode::Version => {
            return Ok(Cli {
                command: Command::Version,
                log_level: None,
                log_format: Format::Text,
            });
        }
        Mode::Forward => {}
        Mode::Reverse => return parse_reverse(&args[1..]),
        Mode::Auth => return auth_cmd::parse_auth(&args[1..]),
    }
    let opts = forward_options();
    let m = parse_options(&opts, &args[1..])?;
    if m.opt_present("help") {
        return Ok(Cli {
            command: Command::Help(opts.usage(USAGE)),
            log_level: None,
            log_format: Format::Text,
        });
    }
    let command = m.free.clone();
    let http = http_options(&m)?;
    let name = match (&http, command.is_empty()) {
        (Some(_), false) => {
            return Err("forward takes either --url or a command after `--`, not both".into());
        }
        (None, true) => return Err("forward needs a server command after `--` (or --url)".into()),
        (Some(h), true) => m.opt_str("name").unwrap_or_else(|| h.url.clone()),
        (None, false) => command_name(&command, m.opt_str("name")),
    };
    if http.is_none() && (m.opt_present("max-connections") || m.opt_present("idle-timeout")) {
        return Err("--max-connections and --idle-timeout apply to forward only with --url".into());
    }
    if http.is_some() && m.opt_present("restart") {
        return Err(
            "--restart applies to a server command; with --url the relay re-initializes by itself"
                .into(),
        );
    }
    let max_message_size = size(&m, "max-message-size", 16 << 20)?;
    if max_message_size < 1024 {
        return Err("--max-message-size: must be at least 1KiB".into());
    }
    let oauth = client_options(&m, http.is_some())?;
    let kill_grace = dur(&m, "kill-grace", Duration::from_secs(2))?;
    let restart_base = dur(&m, "restart-base", Duration::from_millis(250))?;
    let restart_max_delay = dur(&m, "restart-max-delay", Duration::from_secs(30))?;
    if restart_base.is_zero() || restart_max_delay < restart_base {
        return Err("--restart-base must be > 0 and <= --restart-max-delay".into());
    }
    Ok(Cli {
        command: Command::Forward(Box::new(ForwardConfig {
            command: command.into(),
            http,
            name,
            max_message_size,
            response_timeout: dur(&m, "response-timeout", Duration::from_secs(120))?,
            max_request_time: dur(&m, "max-request-time", Duration::from_secs(30 * 60))?,
            kill_grace,
            restart: m.opt_present("restart"),
            restart_base,
            restart_max_delay,
            record: m.opt_str("record").map(PathBuf::from),
            upstream_protocol: upstream_protocol(&m)?,
            tools: tools::filter(&m)?,
            oauth,
            login: false,
        })),
        log_level: m.opt_str("log-level"),
        log_format: Format::from_matches(&m)?,
    })
}

fn reverse_options() -> Options {
    let mut o = Options::new();
    o.optopt(
        "",
        "listen",
        "address to serve HTTP on (default 127.0.0.1:8080)",
        "ADDR",
    );
    o.optopt(
        "",
        "admin",
        "serve /healthz and /metrics on this address instead of the main one",
        "ADDR",
    );
    o.optopt(
        "",
        "path",
        "Streamable HTTP endpoint path (default /mcp)",
        "PATH",
    );
    o.optopt(
        "",
        "pool",
        "session (a process per client session, default) or shared",
        "MODE",
    );
    o.optopt(
        "",
        "max-connections",
        "processes at most (default 16 in session mode, 2 in shared)",
        "N",
    );
    o.optopt(
        "",
        "min-idle",
        "warm spare processes kept ready (default 0)",
        "N",
    );
    o.optopt(
        "",
        "max-waiting",
        "sessions queued for a process (default 4 x max-connections)",
        "N",
    );
    o.optopt(
        "",
        "queue-timeout",
        "how long a session may wait for a process (default 5s)",
        "DUR",
    );
    o.optopt(
        "",
        "idle-timeout",
        "close processes idle this long, above min-idle (default 5m, 0 = never)",
        "DUR",
    );
    o.optopt(
        "",
        "max-lifetime",
        "retire processes older than this once idle (default off)",
        "DUR",
    );
    o.optopt(
        "",
        "session-idle-timeout",
        "end sessions with no traffic this long (default 30m, 0 = never)",
        "DUR",
    );
    o.optopt(
        "",
        "session-reclaim-age",
        "session mode: when the pool is full and a session waits, end the least recently active idle session idle this long (default 2s, 0 = any idle session, never = off)",
        "DUR|never",
    );
    o.optopt(
        "",
        "max-header-size",
        "largest request head, else 431 (default 16KiB)",
        "SIZE",
    );
    o.optopt(
        "",
        "max-body",
        "largest request body, else 413 (default 4MiB)",
        "SIZE",
    );
    o.optopt(
        "",
        "client-header-timeout",
        "time to receive a request head, else 408 (default 10s)",
        "DUR",
    );
    o.optopt(
        "",
        "client-idle-timeout",
        "close keep-alive connections idle this long (default 60s)",
        "DUR",
    );
    o.optopt(
        "",
        "max-clients",
        "concurrent client connections (default 1024)",
        "N",
    );
    o.optopt(
        "",
        "replay-buffer",
        "SSE events kept per session for Last-Event-ID (default 256)",
        "N",
    );
    o.optmulti(
        "",
        "allow-origin",
        "allowed Origin (repeatable; default: none, so browsers' requests get 403)",
        "ORIGIN",
    );
    o.optopt(
        "",
        "auth-token-file",
        "require Authorization: Bearer <a token from this file, one per line>",
        "FILE",
    );
    o.optopt(
        "",
        "shutdown-grace",
        "on SIGTERM, time for in-flight requests to finish (default 10s)",
        "DUR",
    );
    o.optopt(
        "",
        "kill-grace",
        "wait after closing a server's stdin, and after SIGTERM (default 2s)",
        "DUR",
    );
    o.optopt(
        "",
        "response-timeout",
        "per-request reply timeout, restarted by progress (default 120s, 0 = off)",
        "DUR",
    );
    o.optopt(
        "",
        "max-request-time",
        "cap on a request's life (default 30m, 0 = off)",
        "DUR",
    );
    o.optopt(
        "",
        "max-message-size",
        "largest message from a server (default 16MiB)",
        "SIZE",
    );
    o.optopt(
        "",
        "restart-base",
        "first delay bound after a server fails to start (default 250ms)",
        "DUR",
    );
    o.optopt(
        "",
        "restart-max-delay",
        "cap on that delay (default 30s)",
        "DUR",
    );
    o.optopt(
        "",
        "name",
        "upstream name in logs, errors and metrics (default: command's file name)",
        "NAME",
    );
    logging::format::cli_options(&mut o);
    o.optopt(
        "",
        "config",
        "JSON file with several upstreams, each served on /mcp/NAME",
        "FILE",
    );
    o.optopt("", "drain-time", "after SIGTERM, keep answering (healthz 503) at least this long, even when idle (default 0)", "DUR");
    o.optopt(
        "",
        "sse-keepalive",
        "comment on idle SSE streams this often, for proxies' idle timeouts (default 25s, 0 = off)",
        "DUR",
    );
    add_http_options(&mut o);
    add_era_option(&mut o);
    tools::add_options(&mut o);
    add_oauth_options(&mut o);
    add_tls_options(&mut o);
    o.optflag("h", "help", "print this help");
    o
}

fn count(m: &getopts::Matches, name: &str, default: usize) -> Result<usize, String> {
    match m.opt_str(name) {
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("--{name}: expected a number, got {v:?}")),
        None => Ok(default),
    }
}

fn size(m: &getopts::Matches, name: &str, default: usize) -> Result<usize, String> {
    match m.opt_str(name) {
        Some(v) => parse_size(&v).map_err(|e| format!("--{name}: {e}")),
        None => Ok(default),
    }
}

fn addr(m: &getopts::Matches, name: &str) -> Result<Option<std::net::SocketAddr>, String> {
    match m.opt_str(name) {
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| format!("--{name}: expected IP:PORT, got {v:?}")),
        None => Ok(None),
    }
}

fn command_name(command: &[String], given: Option<String>) -> String {
    given.unwrap_or_else(|| {
        std::path::Path::new(&command[0])
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| command[0].clone())
    })
}

fn parse_reverse(args: &[String]) -> Result<Cli, String> {
    let opts = reverse_options();
    let m = parse_options(&opts, args)?;
    if m.opt_present("help") {
        return Ok(Cli {
            command: Command::Help(opts.usage(REVERSE_USAGE)),
            log_level: None,
            log_format: Format::Text,
        });
    }
    let command = m.free.clone();
    let http = http_options(&m)?;
    let config = m.opt_str("config").map(PathBuf::from);
    if config.is_some() && (http.is_some() || !command.is_empty()) {
        return Err("--config names the upstreams; give no --url or command with it".into());
    }
    match (&http, command.is_empty()) {
        (Some(_), false) => {
            return Err("reverse takes either --url or a command after `--`, not both".into());
        }
        (None, true) if config.is_none() => {
            return Err("reverse needs a server command after `--` (or --url, or --config)".into());
        }
        _ => {}
    }
    let pool = match m.opt_str("pool").as_deref() {
        None | Some("session") => PoolMode::Session,
        Some("shared") => PoolMode::Shared,
        Some(other) => return Err(format!("--pool: expected session or shared, got {other:?}")),
    };
    let default_max = if pool == PoolMode::Session { 16 } else { 2 };
    let max_connections = count(&m, "max-connections", default_max)?;
    if max_connections == 0 {
        return Err("--max-connections: must be at least 1".into());
    }
    let min_idle = count(&m, "min-idle", 0)?;
    if min_idle > max_connections {
        return Err(format!(
            "--min-idle: {min_idle} is more than --max-connections {max_connections}"
        ));
    }
    let path = m.opt_str("path").unwrap_or_else(|| "/mcp".into());
    if !path.starts_with('/') {
        return Err(format!("--path: must start with '/', got {path:?}"));
    }
    let max_lifetime = dur(&m, "max-lifetime", Duration::ZERO)?;
    let restart_base = dur(&m, "restart-base", Duration::from_millis(250))?;
    let restart_max_delay = dur(&m, "restart-max-delay", Duration::from_secs(30))?;
    if restart_base.is_zero() || restart_max_delay < restart_base {
        return Err("--restart-base must be > 0 and <= --restart-max-delay".into());
    }
    let listen =
        addr(&m, "listen")?.unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 8080)));
    Ok(Cli {
        command: Command::Reverse(Box::new(ReverseConfig {
            name: match (&http, command.is_empty()) {
                (Some(h), _) => m.opt_str("name").unwrap_or_else(|| h.url.clone()),
                (None, false) => command_name(&command, m.opt_str("name")),
                (None, true) => m.opt_str("name").unwrap_or_else(|| "relay".into()),
            },
            config,
            command: command.into(),
            http,
            listen,
            admin: addr(&m, "admin")?,
            tls: tls_files(&m)?,
            path,
            pool,
            max_connections,
            min_idle,
            max_waiting: count(&m, "max-waiting", max_connections.saturating_mul(4))?,
            queue_timeout: dur(&m, "queue-timeout", Duration::from_secs(5))?,
            idle_timeout: dur(&m, "idle-timeout", Duration::from_secs(300))?,
            max_lifetime: (!max_lifetime.is_zero()).then_some(max_lifetime),
            session_idle_timeout: dur(&m, "session-idle-timeout", Duration::from_secs(1800))?,
            session_reclaim_age: match m.opt_str("session-reclaim-age") {
                Some(v) => {
                    parse_reclaim_age(&v).map_err(|e| format!("--session-reclaim-age: {e}"))?
                }
                None => Some(DEFAULT_RECLAIM_AGE),
            },
            max_header_size: size(&m, "max-header-size", 16 << 10)?,
            max_body: size(&m, "max-body", 4 << 20)?,
            client_header_timeout: dur(&m, "client-header-timeout", Duration::from_secs(10))?,
            client_idle_timeout: dur(&m, "client-idle-timeout", Duration::from_secs(60))?,
            max_clients: count(&m, "max-clients", 1024)?.max(1),
            replay_buffer: count(&m, "replay-buffer", 256)?,
            allow_origins: m.opt_strs("allow-origin"),
            auth_token_file: m.opt_str("auth-token-file").map(PathBuf::from),
            oauth: oauth_options(&m)?,
            shutdown_grace: dur(&m, "shutdown-grace", Duration::from_secs(10))?,
            drain_time: dur(&m, "drain-time", Duration::ZERO)?,
            sse_keepalive: dur(&m, "sse-keepalive", Duration::from_secs(25))?,
            kill_grace: dur(&m, "kill-grace", Duration::from_secs(2))?,
            response_timeout: dur(&m, "response-timeout", Duration::from_secs(120))?,
            max_request_time: dur(&m, "max-request-time", Duration::from_secs(30 * 60))?,
            max_message_size: size(&m, "max-message-size", 16 << 20)?,
            restart_base,
            restart_max_delay,
            upstream_protocol: upstream_protocol(&m)?,
            tools: tools::filter(&m)?,
        })),
        log_level: m.opt_str("log-level"),
        log_format: Format::from_matches(&m)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10d").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("1TiB").is_err());
    }

    #[test]
    fn forward_defaults_and_free_arguments() {
        let cli = parse(&args(&["forward", "--", "server", "--flag", "-x"])).unwrap();
        let Command::Forward(c) = cli.command else {
            panic!("not forward")
        };
        assert_eq!(c.command.argv, args(&["server", "--flag", "-x"]));
        assert_eq!(c.name, "server");
        assert_eq!(c.max_message_size, 16 << 20);
        assert_eq!(c.response_timeout, Duration::from_secs(120));
        assert_eq!(c.max_request_time, Duration::from_secs(1800));
        assert_eq!(c.kill_grace, Duration::from_secs(2));
        assert!(!c.restart);
    }

    #[test]
    fn reverse_defaults_depend_on_the_pool_mode() {
        let cli = parse(&args(&["reverse", "--pool", "shared", "--", "srv"])).unwrap();
        let Command::Reverse(c) = cli.command else {
            panic!("not reverse")
        };
        assert_eq!(c.pool, PoolMode::Shared);
        assert_eq!(c.max_connections, 2);
        assert_eq!(c.max_waiting, 8);
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.path, "/mcp");
        let cli = parse(&args(&["reverse", "--", "srv"])).unwrap();
        let Command::Reverse(c) = cli.command else {
            panic!("not reverse")
        };
        assert_eq!(
            (c.pool, c.max_connections, c.max_waiting),
            (PoolMode::Session, 16, 64)
        );
        assert_eq!(c.session_reclaim_age, Some(Duration::from_secs(2)));
        assert!(
            parse(&args(&[
                "reverse",
                "--min-idle",
                "5",
                "--max-connections",
                "4",
                "--",
                "s"
            ]))
            .is_err()
        );
        assert!(parse(&args(&["reverse", "--pool", "both", "--", "s"])).is_err());
    }

    #[test]
    fn session_reclaim_age_takes_a_duration_zero_or_never() {
        assert_eq!(parse_reclaim_age("30s"), Ok(Some(Duration::from_secs(30))));
        assert_eq!(parse_reclaim_age("0"), Ok(Some(Duration::ZERO)));
        assert_eq!(parse_reclaim_age("never"), Ok(None));
        assert!(parse_reclaim_age("5").is_err(), "a duration needs a unit");
        let e = parse(&args(&["reverse", "--session-reclaim-age=soon", "--", "s"])).unwrap_err();
        assert!(e.starts_with("--session-reclaim-age: "), "{e}");
        assert!(e.ends_with("or never"), "{e}");
    }

    #[test]
    fn errors_name_the_flag() {
        let e = parse(&args(&["forward", "--response-timeout", "soon", "--", "x"])).unwrap_err();
        assert!(e.contains("--response-timeout"), "{e}");
        assert!(parse(&args(&["forward"])).is_err());
        assert!(parse(&args(&["sideways"])).is_err());
    }

    #[test]
    fn upstream_protocol_defaults_to_auto_and_takes_three_values() {
        let fwd = |extra: &[&str]| {
            let mut a = vec!["forward"];
            a.extend_from_slice(extra);
            a.extend_from_slice(&["--", "srv"]);
            parse(&args(&a))
        };
        match fwd(&[]).unwrap().command {
            Command::Forward(c) => assert_eq!(c.upstream_protocol, UpstreamProtocol::Auto),
            _ => panic!("not forward"),
        }
        match fwd(&["--upstream-protocol", "legacy"]).unwrap().command {
            Command::Forward(c) => assert_eq!(c.upstream_protocol, UpstreamProtocol::Legacy),
            _ => panic!("not forward"),
        }
        let r = parse(&args(&[
            "reverse",
            "--upstream-protocol",
            "modern",
            "--",
            "srv",
        ]));
        match r.unwrap().command {
            Command::Reverse(c) => assert_eq!(c.upstream_protocol, UpstreamProtocol::Modern),
            _ => panic!("not reverse"),
        }
        let e = fwd(&["--upstream-protocol", "new"]).unwrap_err();
        assert!(
            e.starts_with("--upstream-protocol:") && e.contains("\"new\""),
            "{e}"
        );
    }
}
