//! Protocol eras: the handshake era (MCP 2024-11-05 … 2025-11-25: one
//! `initialize` per connection or session, then requests without a version)
//! and the modern era (2026-07-28: no `initialize`, no session; every request
//! carries its version, client info and capabilities in `params._meta`), and
//! the pieces that bridge a client of one era to a server of the other.
//! `docs/eras.md` describes the design; this module is its sans-I/O core:
//! values and bytes in, values, bytes and decisions out, `now` passed in.
//!
//! - `classify`: which era a client message belongs to (and the refusals a
//!   modern server would give), the modern HTTP headers for a message.
//! - `convert`: `server/discover` result ⇄ `initialize` result, the relay's
//!   own `initialize` on behalf of a modern client, -32022.
//! - `stamp`: a handshake-era request stamped with the modern envelope, and
//!   the inverse (a modern request stripped for a handshake-era server).
//! - `verdict`: per upstream, which era it speaks (`--upstream-protocol`).
//! - `input`: a handshake-era server's requests to the client, carried to a
//!   modern client as `InputRequiredResult` rounds.
//! - `stamper`: a handshake-era client in front of a modern-only HTTP
//!   server (`initialize` answered from `server/discover`, requests stamped).
//! - `stamper_input`: a modern server's `InputRequiredResult` carried to a
//!   handshake-era client as the server → client requests of its era.
//! - `listen`: `subscriptions/listen` mapped onto `resources/subscribe` and
//!   the server's list-changed and updated notifications.
//! - `loglevel`: the per-request log opt-in (`io.modelcontextprotocol/logLevel`)
//!   applied by the relay in front of a handshake-era server.

pub mod classify;
pub mod convert;
pub mod input;
pub mod link;
pub mod listen;
pub mod loglevel;
pub mod stamp;
pub mod stamper;
pub mod stamper_input;
pub mod verdict;

/// The modern revision the relay speaks.
pub const MODERN_VERSION: &str = "2026-07-28";

/// Revisions reached through `initialize`, oldest first.
pub const HANDSHAKE_VERSIONS: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// Revisions that carry the per-request envelope.
pub const MODERN_VERSIONS: &[&str] = &[MODERN_VERSION];

/// The newest handshake revision: what the relay asks for when it
/// initializes a server itself, and offers a handshake-era client in front of
/// a modern-only server.
pub const LATEST_HANDSHAKE: &str = "2025-11-25";

/// Reserved request `_meta` keys of the modern envelope.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// Per-request log opt-in; without it a modern server sends no log messages.
pub const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
/// Result `_meta` key naming the server (display only).
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// Notification `_meta` key on every `subscriptions/listen` frame: the
/// listen request's id.
pub const META_SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// HTTP headers of the modern era (lowercase, as the HTTP parser keeps them).
pub const HEADER_PROTOCOL_VERSION: &str = "mcp-protocol-version";
pub const HEADER_METHOD: &str = "mcp-method";
pub const HEADER_NAME: &str = "mcp-name";
/// Prefix of the per-tool `Mcp-Param-*` headers, passed through unchanged.
pub const HEADER_PARAM_PREFIX: &str = "mcp-param-";

/// JSON-RPC error codes of the modern era.
pub const HEADER_MISMATCH: i64 = -32020;
pub const MISSING_CLIENT_CAPABILITY: i64 = -32021;
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
pub const INVALID_PARAMS: i64 = -32602;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;

/// Which era a peer, a connection or a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    Handshake,
    Modern,
}

/// `--upstream-protocol`: which era the relay speaks to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// Handshake era only: the relay never sends `server/discover`.
    Legacy,
    /// Probe with `server/discover` once, remember the verdict.
    #[default]
    Auto,
    /// Modern era only: the relay never sends `initialize`.
    Modern,
}

impl UpstreamProtocol {
    /// Parses the flag's or the config key's value.
    pub fn parse(s: &str) -> Result<UpstreamProtocol, String> {
        match s {
            "legacy" => Ok(UpstreamProtocol::Legacy),
            "auto" => Ok(UpstreamProtocol::Auto),
            "modern" => Ok(UpstreamProtocol::Modern),
            other => Err(format!("expected legacy, auto or modern, got {other:?}")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Legacy => "legacy",
            UpstreamProtocol::Auto => "auto",
            UpstreamProtocol::Modern => "modern",
        }
    }
}

/// Whether `v` is a modern revision the relay knows.
pub fn is_modern(v: &str) -> bool {
    MODERN_VERSIONS.contains(&v)
}

/// Whether `v` is a handshake revision the relay knows.
pub fn is_handshake(v: &str) -> bool {
    HANDSHAKE_VERSIONS.contains(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_knob_parses_its_three_values_and_names_the_bad_one() {
        for p in [
            UpstreamProtocol::Legacy,
            UpstreamProtocol::Auto,
            UpstreamProtocol::Modern,
        ] {
            assert_eq!(UpstreamProtocol::parse(p.as_str()), Ok(p));
        }
        assert_eq!(UpstreamProtocol::default(), UpstreamProtocol::Auto);
        let e = UpstreamProtocol::parse("Modern").unwrap_err();
        assert!(e.contains("\"Modern\""), "{e}");
    }

    #[test]
    fn the_eras_do_not_overlap() {
        for v in HANDSHAKE_VERSIONS {
            assert!(is_handshake(v) && !is_modern(v));
        }
        assert!(is_modern(MODERN_VERSION) && !is_handshake(MODERN_VERSION));
        assert!(is_handshake(LATEST_HANDSHAKE));
        assert!(!is_modern("2026-13-01") && !is_handshake("zzz"));
    }
}
