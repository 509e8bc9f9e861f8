//! The config file parser (`config::parse`, what `config::load` calls after
//! reading the file), on top of the defaults `reverse --config` gives; and
//! the duration, size and URL parsers it uses, on the same text.
//!
//! Checks: no panic (including arithmetic overflow: fuzz builds keep debug
//! assertions) on any text; an accepted file has at least one upstream, each
//! on `/mcp/NAME` with exactly one of command and url, at least one
//! connection, `min_idle <= max_connections`, a restart delay range that is
//! not empty, and `env` only on command upstreams (also from a host's
//! `mcpServers` object).
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mcp_relay::cli::{self, Command, ReverseConfig, parse_duration, parse_size};
use mcp_relay::config;
use mcp_relay::upstream::url::Url;

fn base() -> &'static ReverseConfig {
    static BASE: OnceLock<ReverseConfig> = OnceLock::new();
    BASE.get_or_init(|| {
        // docs/configuration.md's sample reads its token from REMOTE_AUTH.
        // SAFETY: set once, before any other thread could read the
        // environment (libFuzzer runs the target on one thread).
        unsafe { std::env::set_var("REMOTE_AUTH", "Bearer fuzz") };
        let args: Vec<String> = ["reverse", "--config", "relay.json"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        match cli::parse(&args).expect("reverse --config parses").command {
            Command::Reverse(c) => *c,
            _ => unreachable!(),
        }
    })
}


fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_duration(text);
    let _ = parse_size(text);
    if let Ok(url) = Url::parse(text) {
        assert!(url.target.starts_with('/'), "target {:?}", url.target);
        assert!(!url.host_header.is_empty());
    }
    let Ok(relay) = config::parse(text, base(), Some(Path::new("/etc/mcp-relay"))) else {
        return;
    };
    assert!(!relay.upstreams.is_empty());
    for up in &relay.upstreams {
        assert_eq!(up.path, format!("/mcp/{}", up.name));
        assert!(
            up.command.is_empty() != up.http.is_none(),
            "command xor url"
        );
        assert!(
            up.command.env.is_empty() || up.http.is_none(),
            "env on a url upstream"
        );
        assert!(up.max_connections >= 1);
        assert!(up.min_idle <= up.max_connections);
        assert!(!up.restart_base.is_zero() && up.restart_base <= up.restart_max_delay);
        if let Some(h) = &up.http {
            Url::parse(&h.url).expect("accepted url reparses");
        }
    }
});
