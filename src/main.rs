//! mcp-relay: a single-threaded proxy for the Model Context Protocol.

use mcp_relay::{cli, front};

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cli = match cli::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mcp-relay: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(cli.log_level.as_deref());
    match cli.command {
        cli::Command::Help(text) => {
            // Help goes to stderr: stdout is reserved for MCP messages.
            eprintln!("{text}");
            ExitCode::SUCCESS
        }
        cli::Command::Version => {
            eprintln!("mcp-relay {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        cli::Command::Reverse(cfg) => match front::reverse::run(*cfg) {
            Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => {
                log::error!("{e}");
                ExitCode::from(1)
            }
        },
        cli::Command::Forward(cfg) => match front::forward::run(*cfg) {
            Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => {
                log::error!("{e}");
                ExitCode::from(1)
            }
        },
    }
}

fn init_logging(level: Option<&str>) {
    let mut b = env_logger::Builder::new();
    b.target(env_logger::Target::Stderr);
    match level {
        Some(l) => {
            b.parse_filters(l);
        }
        None => match std::env::var("RUST_LOG") {
            Ok(v) => {
                b.parse_filters(&v);
            }
            Err(_) => {
                b.filter_level(log::LevelFilter::Info);
            }
        },
    }
    b.format_target(false);
    b.init();
}
