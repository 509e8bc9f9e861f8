//! The two eras' ways of saying "who the server is": a handshake-era
//! `InitializeResult` and a modern `DiscoverResult`, each built from the
//! other, and the relay's own requests for either.
//!
//! ```text
//! InitializeResult                      DiscoverResult
//! { protocolVersion: "2025-11-25",      { supportedVersions: ["2026-07-28"],
//!   capabilities: {...},          ⇄       capabilities: {...},
//!   serverInfo: {name, version},          _meta: {"io.modelcontextprotocol/serverInfo": {...}},
//!   instructions? }                       instructions?, ttlMs: 0,
//!                                         cacheScope: "private", resultType: "complete" }
//! ```

use serde_json::{Map, Value, json};

use super::{
    HANDSHAKE_VERSIONS, LATEST_HANDSHAKE, META_CLIENT_CAPABILITIES, META_CLIENT_INFO,
    META_PROTOCOL_VERSION, META_SERVER_INFO, MODERN_VERSION, is_handshake, is_modern,
};

/// Capabilities that exist only in the handshake era (dropped toward a
/// modern client): `logging` became a per-request opt-in, and `tasks` left
/// the core specification.
const HANDSHAKE_ONLY_CAPS: &[&str] = &["logging", "tasks"];

/// The `server/discover` result a modern client gets in front of a
/// handshake-era server that answered `init` (an `InitializeResult`). The
/// relay speaks the modern revision to the client; the capabilities are the
/// server's; the result is private and immediately stale (it is that
/// server's, as the relay initialized it). `None` when `init` is not an
/// object with `capabilities`.
pub fn discover_from_initialize(init: &Value) -> Option<Value> {
    let caps = init.get("capabilities")?.as_object()?;
    let mut caps = caps.clone();
    for k in HANDSHAKE_ONLY_CAPS {
        caps.remove(*k);
    }
    let mut out = Map::new();
    out.insert("supportedVersions".into(), json!([MODERN_VERSION]));
    out.insert("capabilities".into(), Value::Object(caps));
    if let Some(i) = init.get("instructions").filter(|v| v.is_string()) {
        out.insert("instructions".into(), i.clone());
    }
    out.insert("ttlMs".into(), Value::from(0));
    out.insert("cacheScope".into(), Value::from("private"));
    out.insert("resultType".into(), Value::from("complete"));
    if let Some(info) = init.get("serverInfo").filter(|v| v.is_object()) {
        out.insert("_meta".into(), json!({ META_SERVER_INFO: info }));
    }
    Some(Value::Object(out))
}

/// The `InitializeResult` a handshake-era client gets in front of a
/// modern-only server whose `server/discover` answered `discover`. The
/// version is the client's when the relay knows it, else the newest
/// handshake revision; `fallback_name` names the server when it did not
/// name itself. `None` when `discover` has no capabilities object.
pub fn initialize_from_discover(
    discover: &Value,
    requested: Option<&str>,
    fallback_name: &str,
) -> Option<Value> {
    let caps = discover.get("capabilities")?.as_object()?;
    let version = requested
        .filter(|v| is_handshake(v))
        .unwrap_or(LATEST_HANDSHAKE);
    let info = discover
        .get("_meta")
        .and_then(|m| m.get(META_SERVER_INFO))
        .filter(|i| {
            i.get("name").is_some_and(Value::is_string)
                && i.get("version").is_some_and(Value::is_string)
        })
        .cloned()
        .unwrap_or_else(|| {
            crate::proto::object::object([
                ("name", serde_json::Value::from(fallback_name)),
                ("version", serde_json::Value::from("unknown")),
            ])
        });
    let mut out = Map::new();
    out.insert("protocolVersion".into(), Value::from(version));
    out.insert("capabilities".into(), Value::Object(caps.clone()));
    out.insert("serverInfo".into(), info);
    if let Some(i) = discover.get("instructions").filter(|v| v.is_string()) {
        out.insert("instructions".into(), i.clone());
    }
    Some(Value::Object(out))
}

/// The relay's own `initialize` to a handshake-era server on behalf of a
/// modern client, from that client's envelope (its info and capabilities).
/// `id` is the relay's own request id (outside the client's id space).
pub fn initialize_request(id: &str, client_info: Option<&Value>, capabilities: &Value) -> Vec<u8> {
    let info = client_info
        .filter(|i| i.is_object())
        .cloned()
        .unwrap_or_else(|| {
            crate::proto::object::object([
                ("name", serde_json::Value::from("mcp-relay")),
                (
                    "version",
                    serde_json::Value::from(env!("CARGO_PKG_VERSION")),
                ),
            ])
        });
    let caps = if capabilities.is_object() {
        capabilities.clone()
    } else {
        json!({})
    };
    let msg = crate::proto::object::object([
        ("jsonrpc", Value::from("2.0")),
        ("id", Value::from(id)),
        ("method", Value::from("initialize")),
        (
            "params",
            crate::proto::object::object([
                ("protocolVersion", Value::from(LATEST_HANDSHAKE)),
                ("capabilities", caps),
                ("clientInfo", info),
            ]),
        ),
    ]);
    msg.to_string().into_bytes()
}

/// The relay's probe: `server/discover` at the modern revision, carrying
/// the relay's own envelope (as its own client).
pub fn discover_request(id: &str) -> Vec<u8> {
    let msg = crate::proto::object::object([
        ("jsonrpc", Value::from("2.0")),
        ("id", Value::from(id)),
        ("method", Value::from("server/discover")),
        (
            "params",
            crate::proto::object::object([(
                "_meta",
                crate::proto::object::object([
                    (META_PROTOCOL_VERSION, Value::from(MODERN_VERSION)),
                    (
                        META_CLIENT_INFO,
                        crate::proto::object::object([
                            ("name", Value::from("mcp-relay")),
                            ("version", Value::from(env!("CARGO_PKG_VERSION"))),
                        ]),
                    ),
                    (META_CLIENT_CAPABILITIES, Value::Object(Map::new())),
                ]),
            )]),
        ),
    ]);
    msg.to_string().into_bytes()
}

/// What a `server/discover` answer says about the server's era.
#[derive(Debug, Clone, PartialEq)]
pub enum DiscoverOutcome {
    /// A result naming a modern revision the relay speaks.
    Modern { version: String, result: Value },
    /// Any answer that is not evidence of a modern server: an error other
    /// than -32022, a result that does not parse, or one naming only
    /// handshake revisions. The server is reached through `initialize`.
    Legacy,
    /// -32022 naming only modern revisions, none the relay speaks: a
    /// modern-only server the relay cannot talk to.
    Incompatible { supported: Vec<String> },
}

/// Reads the answer to the relay's probe: `result` or `error` (as the
/// response's members). Mirrors the official clients: everything but a
/// disjoint modern-only -32022 falls back to the handshake.
pub fn read_discover(result: Option<&Value>, error: Option<&Value>) -> DiscoverOutcome {
    if let Some(r) = result {
        let versions: Vec<&str> = r
            .get("supportedVersions")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let ok = r.get("capabilities").is_some_and(Value::is_object);
        return match versions.iter().rev().find(|v| is_modern(v)) {
            Some(v) if ok => DiscoverOutcome::Modern {
                version: (*v).to_string(),
                result: r.clone(),
            },
            _ => DiscoverOutcome::Legacy,
        };
    }
    let Some(e) = error else {
        return DiscoverOutcome::Legacy;
    };
    if e.get("code").and_then(Value::as_i64) != Some(super::UNSUPPORTED_PROTOCOL_VERSION) {
        return DiscoverOutcome::Legacy;
    }
    let Some(supported) = e
        .get("data")
        .and_then(|d| d.get("supported"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
    else {
        return DiscoverOutcome::Legacy;
    };
    if supported
        .iter()
        .any(|v| is_modern(v) || HANDSHAKE_VERSIONS.contains(&v.as_str()))
    {
        // It names a revision the relay speaks: a modern one would have
        // been answered by a retry at it, which the relay never needs (it
        // speaks one modern revision); a handshake one means `initialize`.
        if supported.iter().any(|v| is_modern(v)) {
            return DiscoverOutcome::Modern {
                version: MODERN_VERSION.into(),
                result: Value::Null,
            };
        }
        return DiscoverOutcome::Legacy;
    }
    DiscoverOutcome::Incompatible { supported }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init() -> Value {
        json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {"listChanged": true}, "logging": {}, "resources": {"subscribe": true}},
            "serverInfo": {"name": "echo", "version": "1.2"},
            "instructions": "be nice",
        })
    }

    #[test]
    fn discover_is_built_from_an_initialize_result() {
        let d = discover_from_initialize(&init()).unwrap();
        assert_eq!(d["supportedVersions"], json!(["2026-07-28"]));
        assert_eq!(
            d["capabilities"],
            json!({"tools": {"listChanged": true}, "resources": {"subscribe": true}})
        );
        assert_eq!(d["instructions"], "be nice");
        assert_eq!(d["ttlMs"], 0);
        assert_eq!(d["cacheScope"], "private");
        assert_eq!(d["resultType"], "complete");
        assert_eq!(d["_meta"][META_SERVER_INFO]["name"], "echo");
        assert_eq!(discover_from_initialize(&json!({"serverInfo": {}})), None);
        assert_eq!(discover_from_initialize(&json!([1])), None);
        let bare = discover_from_initialize(&json!({"capabilities": {}})).unwrap();
        assert!(bare.get("_meta").is_none() && bare.get("instructions").is_none());
    }

    #[test]
    fn initialize_is_built_from_a_discover_result_and_round_trips() {
        let d = discover_from_initialize(&init()).unwrap();
        let i = initialize_from_discover(&d, Some("2025-06-18"), "up").unwrap();
        assert_eq!(i["protocolVersion"], "2025-06-18");
        assert_eq!(i["serverInfo"], json!({"name": "echo", "version": "1.2"}));
        assert_eq!(i["instructions"], "be nice");
        assert_eq!(i["capabilities"]["tools"], json!({"listChanged": true}));
        // An unknown or modern requested version gets the newest handshake.
        for r in [None, Some("2026-07-28"), Some("1999-01-01")] {
            assert_eq!(
                initialize_from_discover(&d, r, "up").unwrap()["protocolVersion"],
                LATEST_HANDSHAKE
            );
        }
        // A server that does not name itself (or names itself badly).
        let anon = json!({"capabilities": {}, "_meta": {META_SERVER_INFO: {"name": 3}}});
        assert_eq!(
            initialize_from_discover(&anon, None, "up").unwrap()["serverInfo"]["name"],
            "up"
        );
        assert_eq!(initialize_from_discover(&json!({}), None, "up"), None);
    }

    #[test]
    fn the_relays_own_requests_are_well_formed() {
        let caps = json!({"sampling": {}});
        let info = json!({"name": "cli", "version": "2"});
        let r: Value =
            serde_json::from_slice(&initialize_request("relay-1", Some(&info), &caps)).unwrap();
        assert_eq!(r["method"], "initialize");
        assert_eq!(r["id"], "relay-1");
        assert_eq!(r["params"]["protocolVersion"], LATEST_HANDSHAKE);
        assert_eq!(r["params"]["clientInfo"], info);
        assert_eq!(r["params"]["capabilities"], caps);
        let r: Value =
            serde_json::from_slice(&initialize_request("x", Some(&json!("bad")), &json!(3)))
                .unwrap();
        assert_eq!(r["params"]["clientInfo"]["name"], "mcp-relay");
        assert_eq!(r["params"]["capabilities"], json!({}));
        let d: Value = serde_json::from_slice(&discover_request("p")).unwrap();
        assert_eq!(d["method"], "server/discover");
        assert_eq!(d["params"]["_meta"][META_PROTOCOL_VERSION], MODERN_VERSION);
        assert!(d["params"]["_meta"][META_CLIENT_CAPABILITIES].is_object());
    }

    #[test]
    fn discover_answers_are_read_as_the_official_clients_read_them() {
        let modern = json!({"supportedVersions": ["2026-07-28"], "capabilities": {}});
        assert!(matches!(
            read_discover(Some(&modern), None),
            DiscoverOutcome::Modern { .. }
        ));
        // Discover answered, but only handshake revisions advertised.
        let old = json!({"supportedVersions": ["2025-11-25"], "capabilities": {}});
        assert_eq!(read_discover(Some(&old), None), DiscoverOutcome::Legacy);
        assert_eq!(
            read_discover(Some(&json!({"supportedVersions": ["2026-07-28"]})), None),
            DiscoverOutcome::Legacy
        );
        // Method not found, invalid request, anything but -32022.
        for code in [-32601, -32600, -32602, -32603, -32000] {
            let e = json!({"code": code, "message": "x"});
            assert_eq!(
                read_discover(None, Some(&e)),
                DiscoverOutcome::Legacy,
                "{code}"
            );
        }
        let e = json!({"code": -32022, "message": "x", "data": {"supported": ["2025-06-18"]}});
        assert_eq!(read_discover(None, Some(&e)), DiscoverOutcome::Legacy);
        let e = json!({"code": -32022, "message": "x", "data": {"supported": ["2027-01-01"]}});
        assert_eq!(
            read_discover(None, Some(&e)),
            DiscoverOutcome::Incompatible {
                supported: vec!["2027-01-01".into()]
            }
        );
        let e = json!({"code": -32022, "message": "x", "data": {"supported": ["2026-07-28", "2027-01-01"]}});
        assert!(matches!(
            read_discover(None, Some(&e)),
            DiscoverOutcome::Modern { .. }
        ));
        let e = json!({"code": -32022, "message": "x", "data": "nope"});
        assert_eq!(read_discover(None, Some(&e)), DiscoverOutcome::Legacy);
        assert_eq!(read_discover(None, None), DiscoverOutcome::Legacy);
    }
}
