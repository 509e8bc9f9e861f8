//! mcp-relay: a single-threaded proxy for the Model Context Protocol.

use mcp_relay::{cli, front, logging};

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
    logging::init(cli.log_level.as_deref(), cli.log_format);
    let code = match cli.command {
        // Asked for, so on stdout: stdout is reserved for MCP messages only
        // while relaying.
        cli::Command::Help(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        cli::Command::Version => {
            println!("mcp-relay {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        cli::Command::Reverse(cfg) => match front::reverse::run(*cfg) {
            Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => {
                mcp_relay::log_error!("{e}");
                ExitCode::from(1)
            }
        },
        cli::Command::Auth(cmd) => ExitCode::from(front::auth::run(&cmd).clamp(0, 255) as u8),
        cli::Command::Forward(cfg) => match front::forward::run(*cfg) {
            Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => {
                mcp_relay::log_error!("{e}");
                ExitCode::from(1)
            }
        },
    };
    // Summaries of lines suppressed in the last window are not lost at exit.
    logging::flush();
    code
}
