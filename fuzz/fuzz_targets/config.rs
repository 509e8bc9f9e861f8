//! The config file parser (`config::parse`, what `config::load` calls after
//! reading the file), on top of the defaults `reverse --config` gives; and
//! the duration, size and URL parsers it uses, on the same text.
//!
//! Checks: no panic (including arithmetic overflow: fuzz builds keep debug
//! assertions) on any text; an accepted file has at least one upstream, each
//! on `/mcp/NAME` with exactly one of command and url, at least one
//! connection, `min_idle <= max_connections`, and a restart delay range
//! that is not empty.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use fuzz_util::strict;
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

/// Known finding F3: `max_connections` above `usize::MAX / 4`, with no
/// `max_waiting`, overflows `4 * max_connections` (src/config.rs).
fn f3(text: &str) -> bool {
    let Ok(serde_json::Value::Object(top)) = serde_json::from_str(text) else {
        return false;
    };
    let huge = |o: &serde_json::Map<String, serde_json::Value>| {
        o.get("max_connections")
            .and_then(serde_json::Value::as_u64)
            .is_some_and(|n| n > u64::MAX / 4)
    };
    let ups = top.get("upstreams").and_then(serde_json::Value::as_object);
    huge(&top) || ups.is_some_and(|u| u.values().filter_map(|v| v.as_object()).any(huge))
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
    if !strict() && f3(text) {
        return;
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
        assert!(up.max_connections >= 1);
        assert!(up.min_idle <= up.max_connections);
        assert!(!up.restart_base.is_zero() && up.restart_base <= up.restart_max_delay);
        if let Some(h) = &up.http {
            Url::parse(&h.url).expect("accepted url reparses");
        }
    }
});
