//! Command line: `mcp-relay MODE [OPTIONS] -- COMMAND [ARG...]`.
//!
//! Durations take a unit (`250ms`, `10s`, `5m`, `1h`); `0` means "off" where a
//! flag says so. Sizes take an optional binary unit (`4096`, `64KiB`, `16MiB`).

use std::path::PathBuf;
use std::time::Duration;

use getopts::Options;

pub const USAGE: &str = "Usage: mcp-relay forward [OPTIONS] -- COMMAND [ARG...]

Relays MCP (newline-delimited JSON-RPC) between this process's stdin/stdout
and a server process it spawns.";

#[derive(Debug, Clone)]
pub struct ForwardConfig {
    pub command: Vec<String>,
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
}

#[derive(Debug)]
pub enum Command {
    Forward(ForwardConfig),
    Help(String),
    Version,
}

#[derive(Debug)]
pub struct Cli {
    pub command: Command,
    pub log_level: Option<String>,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "" if value == 0.0 => 0.0,
        "" => return Err(format!("duration {s:?} needs a unit (ms, s, m, h)")),
        _ => return Err(format!("bad duration unit in {s:?} (use ms, s, m, h)")),
    };
    let secs = value * scale;
    if !secs.is_finite() || secs < 0.0 || secs > 10.0 * 365.0 * 86400.0 {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
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
    o.optopt(
        "",
        "log-level",
        "error, warn, info, debug, trace (default info; RUST_LOG also works)",
        "LEVEL",
    );
    o.optflag("h", "help", "print this help");
    o
}

fn dur(m: &getopts::Matches, name: &str, default: Duration) -> Result<Duration, String> {
    match m.opt_str(name) {
        Some(v) => parse_duration(&v).map_err(|e| format!("--{name}: {e}")),
        None => Ok(default),
    }
}

pub fn parse(args: &[String]) -> Result<Cli, String> {
    let mode = args.first().map(String::as_str);
    match mode {
        None | Some("-h") | Some("--help") | Some("help") => {
            return Ok(Cli {
                command: Command::Help(forward_options().usage(USAGE)),
                log_level: None,
            });
        }
        Some("-V") | Some("--version") => {
            return Ok(Cli {
                command: Command::Version,
                log_level: None,
            });
        }
        Some("forward") => {}
        Some(other) => return Err(format!("unknown mode {other:?}; try `mcp-relay --help`")),
    }
    let opts = forward_options();
    let m = opts.parse(&args[1..]).map_err(|e| e.to_string())?;
    if m.opt_present("help") {
        return Ok(Cli {
            command: Command::Help(opts.usage(USAGE)),
            log_level: None,
        });
    }
    let command = m.free.clone();
    if command.is_empty() {
        return Err("forward needs a server command after `--`".into());
    }
    let name = match m.opt_str("name") {
        Some(n) => n,
        None => std::path::Path::new(&command[0])
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| command[0].clone()),
    };
    let max_message_size = match m.opt_str("max-message-size") {
        Some(v) => parse_size(&v).map_err(|e| format!("--max-message-size: {e}"))?,
        None => 16 << 20,
    };
    if max_message_size < 1024 {
        return Err("--max-message-size: must be at least 1KiB".into());
    }
    let kill_grace = dur(&m, "kill-grace", Duration::from_secs(2))?;
    let restart_base = dur(&m, "restart-base", Duration::from_millis(250))?;
    let restart_max_delay = dur(&m, "restart-max-delay", Duration::from_secs(30))?;
    if restart_base.is_zero() || restart_max_delay < restart_base {
        return Err("--restart-base must be > 0 and <= --restart-max-delay".into());
    }
    Ok(Cli {
        command: Command::Forward(ForwardConfig {
            command,
            name,
            max_message_size,
            response_timeout: dur(&m, "response-timeout", Duration::from_secs(120))?,
            max_request_time: dur(&m, "max-request-time", Duration::from_secs(30 * 60))?,
            kill_grace,
            restart: m.opt_present("restart"),
            restart_base,
            restart_max_delay,
            record: m.opt_str("record").map(PathBuf::from),
        }),
        log_level: m.opt_str("log-level"),
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
        assert_eq!(c.command, args(&["server", "--flag", "-x"]));
        assert_eq!(c.name, "server");
        assert_eq!(c.max_message_size, 16 << 20);
        assert_eq!(c.response_timeout, Duration::from_secs(120));
        assert_eq!(c.max_request_time, Duration::from_secs(1800));
        assert_eq!(c.kill_grace, Duration::from_secs(2));
        assert!(!c.restart);
    }

    #[test]
    fn errors_name_the_flag() {
        let e = parse(&args(&["forward", "--response-timeout", "soon", "--", "x"])).unwrap_err();
        assert!(e.contains("--response-timeout"), "{e}");
        assert!(parse(&args(&["forward"])).is_err());
        assert!(parse(&args(&["sideways"])).is_err());
    }
}
