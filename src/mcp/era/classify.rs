//! Which era a client's request belongs to, checked the way a modern server
//! checks it, and the HTTP headers a modern request carries.
//!
//! The one signal of the modern era in a body is the reserved
//! `io.modelcontextprotocol/protocolVersion` key in `params._meta` (handshake
//! requests carry `_meta` too, for `progressToken`, but never a reserved key);
//! over HTTP the `MCP-Protocol-Version` header naming a modern revision is
//! the other. `initialize` is always the handshake, whatever it carries.

use serde_json::Value;

use super::{
    HEADER_MISMATCH, INVALID_PARAMS, META_CLIENT_CAPABILITIES, META_CLIENT_INFO, META_LOG_LEVEL,
    META_PROTOCOL_VERSION, MODERN_VERSIONS, UNSUPPORTED_PROTOCOL_VERSION, is_modern,
};

/// Methods whose named parameter is mirrored in the `Mcp-Name` header.
pub fn name_param(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// The routing headers of one HTTP request, as received (`None`: absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteHeaders<'a> {
    pub version: Option<&'a str>,
    pub method: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// The modern envelope of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub version: String,
    pub client_info: Option<Value>,
    pub capabilities: Value,
    pub log_level: Option<String>,
}

/// A refusal in the words a modern server uses (JSON-RPC error fields).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: i64,
    pub message: &'static str,
    pub data: Value,
}

/// What a client's request is.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientRequest {
    /// `initialize`: opens a handshake-era connection or session.
    Initialize { requested: Option<String> },
    /// A request carrying a valid modern envelope.
    Modern(Envelope),
    /// A request without the envelope: handshake era.
    Handshake,
    /// A modern request a modern server would refuse.
    Refused(Refusal),
}

/// Classifies one request by its method, `params` (raw JSON text, `None`
/// when absent) and, over HTTP, its routing headers (`None` on stdio).
/// Never panics; a `params` that is not JSON classifies as handshake (the
/// envelope check already passed it as JSON, so that does not happen).
pub fn classify(
    method: &str,
    params: Option<&str>,
    headers: Option<RouteHeaders>,
) -> ClientRequest {
    if method == "initialize" {
        let requested = params
            .and_then(|p| serde_json::from_str::<Value>(p).ok())
            .and_then(|v| v.get("protocolVersion")?.as_str().map(str::to_string));
        return ClientRequest::Initialize { requested };
    }
    let header_modern = headers.and_then(|h| h.version).is_some_and(is_modern);
    // Fast path: no reserved key in the text, no modern header.
    let mentions = params.is_some_and(|p| {
        memchr::memmem::find(p.as_bytes(), META_PROTOCOL_VERSION.as_bytes()).is_some()
    });
    if !mentions && !header_modern {
        return ClientRequest::Handshake;
    }
    let parsed: Option<Value> = params.and_then(|p| serde_json::from_str(p).ok());
    let meta = parsed
        .as_ref()
        .and_then(|p| p.get("_meta"))
        .and_then(Value::as_object);
    let has_key = meta.is_some_and(|m| m.contains_key(META_PROTOCOL_VERSION));
    if !has_key && !header_modern {
        // The key's name appeared in some other member (an argument value).
        return ClientRequest::Handshake;
    }
    let Some(meta) = meta else {
        return ClientRequest::Refused(Refusal {
            code: INVALID_PARAMS,
            message: "params._meta must be an object carrying the protocol version and client capabilities",
            data: Value::Null,
        });
    };
    let (Some(version), Some(capabilities)) = (
        meta.get(META_PROTOCOL_VERSION),
        meta.get(META_CLIENT_CAPABILITIES),
    ) else {
        return ClientRequest::Refused(Refusal {
            code: INVALID_PARAMS,
            message: "params._meta is missing the protocol version or the client capabilities",
            data: Value::Null,
        });
    };
    if let Some(h) = headers
        && let Some(r) = header_refusal(method, parsed.as_ref(), version, h)
    {
        return ClientRequest::Refused(r);
    }
    let Some(version) = version.as_str() else {
        return ClientRequest::Refused(Refusal {
            code: INVALID_PARAMS,
            message: "the protocol version in params._meta must be a string",
            data: Value::Null,
        });
    };
    if !is_modern(version) {
        return ClientRequest::Refused(unsupported(version));
    }
    ClientRequest::Modern(Envelope {
        version: version.to_string(),
        client_info: meta.get(META_CLIENT_INFO).cloned(),
        capabilities: capabilities.clone(),
        log_level: meta
            .get(META_LOG_LEVEL)
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// -32022 naming the revisions the relay serves in the modern era.
pub fn unsupported(requested: &str) -> Refusal {
    Refusal {
        code: UNSUPPORTED_PROTOCOL_VERSION,
        message: "Unsupported protocol version",
        data: crate::proto::object::object([
            ("supported", serde_json::Value::from(MODERN_VERSIONS)),
            ("requested", serde_json::Value::from(requested)),
        ]),
    }
}

fn header_refusal(
    method: &str,
    params: Option<&Value>,
    version: &Value,
    h: RouteHeaders,
) -> Option<Refusal> {
    let mismatch = |message| Refusal {
        code: HEADER_MISMATCH,
        message,
        data: Value::Null,
    };
    if h.version.is_none() || version.as_str() != h.version {
        return Some(mismatch(
            "MCP-Protocol-Version header does not match params._meta",
        ));
    }
    if h.method != Some(method) {
        return Some(mismatch("Mcp-Method header does not match the method"));
    }
    if let Some(key) = name_param(method)
        && let Some(body) = params.and_then(|p| p.get(key)).and_then(Value::as_str)
        && h.name.and_then(decode_header_value).as_deref() != Some(body)
    {
        return Some(mismatch(
            "Mcp-Name header does not match the named parameter",
        ));
    }
    None
}

/// The routing headers a modern request carries over HTTP: version, method
/// and, for a method naming something, its name (encoded).
pub fn headers_for(version: &str, method: &str, params: Option<&Value>) -> Vec<(String, String)> {
    let mut out = vec![
        (
            super::HEADER_PROTOCOL_VERSION.to_string(),
            version.to_string(),
        ),
        (
            super::HEADER_METHOD.to_string(),
            encode_header_value(method),
        ),
    ];
    if let Some(key) = name_param(method)
        && let Some(name) = params.and_then(|p| p.get(key)).and_then(Value::as_str)
    {
        out.push((super::HEADER_NAME.to_string(), encode_header_value(name)));
    }
    out
}

/// Whether a client's header is passed through to a modern upstream as it
/// is (`Mcp-Param-*`: the server checks them against the arguments).
pub fn is_param_header(name: &str) -> bool {
    name.len() > super::HEADER_PARAM_PREFIX.len()
        && name.as_bytes()[..super::HEADER_PARAM_PREFIX.len()]
            .eq_ignore_ascii_case(super::HEADER_PARAM_PREFIX.as_bytes())
}

const SENTINEL_HEAD: &str = "=?base64?";
const SENTINEL_TAIL: &str = "?=";

/// A header value: verbatim when it is visible ASCII without edge spaces,
/// else wrapped as `=?base64?…?=`.
pub fn encode_header_value(v: &str) -> String {
    let plain = v.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && v.trim() == v
        && !(v.starts_with(SENTINEL_HEAD) && v.ends_with(SENTINEL_TAIL));
    if plain {
        v.to_string()
    } else {
        format!("{SENTINEL_HEAD}{}{SENTINEL_TAIL}", b64_encode(v.as_bytes()))
    }
}

/// The inverse of [`encode_header_value`]; `None` for a malformed sentinel
/// (bad or non-canonical base64, bad UTF-8), which then matches nothing.
pub fn decode_header_value(v: &str) -> Option<String> {
    let Some(payload) = v
        .strip_prefix(SENTINEL_HEAD)
        .and_then(|r| r.strip_suffix(SENTINEL_TAIL))
    else {
        return Some(v.to_string());
    };
    let bytes = b64_decode(payload)?;
    if b64_encode(&bytes) != payload {
        return None;
    }
    String::from_utf8(bytes).ok()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (ci, chunk) in s.chunks(4).enumerate() {
        let last = ci == s.len() / 4 - 1;
        let mut n = 0u32;
        let mut pad = 0;
        for (i, &c) in chunk.iter().enumerate() {
            let v = if c == b'=' {
                if !last || i < 2 {
                    return None;
                }
                pad += 1;
                0
            } else {
                if pad > 0 {
                    return None;
                }
                B64.iter().position(|&x| x == c)? as u32
            };
            n = (n << 6) | v;
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: &str = "io.modelcontextprotocol/clientCapabilities";

    fn modern_params(extra: &str) -> String {
        format!(
            r#"{{{extra}"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","{CAPS}":{{}},"io.modelcontextprotocol/clientInfo":{{"name":"c","version":"1"}}}}}}"#
        )
    }

    #[test]
    fn initialize_is_the_handshake_even_with_an_envelope() {
        let p = modern_params(r#""protocolVersion":"2025-06-18","#);
        assert_eq!(
            classify("initialize", Some(&p), None),
            ClientRequest::Initialize {
                requested: Some("2025-06-18".into())
            }
        );
        assert_eq!(
            classify("initialize", None, None),
            ClientRequest::Initialize { requested: None }
        );
    }

    #[test]
    fn a_bare_meta_or_no_params_is_the_handshake() {
        assert_eq!(classify("tools/list", None, None), ClientRequest::Handshake);
        let p = r#"{"_meta":{"progressToken":1}}"#;
        assert_eq!(
            classify("tools/call", Some(p), None),
            ClientRequest::Handshake
        );
        // The key's name inside an argument is not the envelope.
        let p = r#"{"name":"x","arguments":{"s":"io.modelcontextprotocol/protocolVersion"}}"#;
        assert_eq!(
            classify("tools/call", Some(p), None),
            ClientRequest::Handshake
        );
    }

    #[test]
    fn a_full_envelope_is_modern_with_its_fields() {
        let p = modern_params("");
        let ClientRequest::Modern(e) = classify("tools/list", Some(&p), None) else {
            panic!("not modern");
        };
        assert_eq!(e.version, "2026-07-28");
        assert_eq!(e.client_info.unwrap()["name"], "c");
        assert_eq!(e.capabilities, serde_json::json!({}));
        assert_eq!(e.log_level, None);
    }

    #[test]
    fn half_envelopes_and_bad_versions_are_refused_as_a_modern_server_would() {
        let p = r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}"#;
        let ClientRequest::Refused(r) = classify("tools/list", Some(p), None) else {
            panic!()
        };
        assert_eq!(r.code, INVALID_PARAMS);
        let p =
            format!(r#"{{"_meta":{{"io.modelcontextprotocol/protocolVersion":7,"{CAPS}":{{}}}}}}"#);
        let ClientRequest::Refused(r) = classify("tools/list", Some(&p), None) else {
            panic!()
        };
        assert_eq!(r.code, INVALID_PARAMS);
        let p = format!(
            r#"{{"_meta":{{"io.modelcontextprotocol/protocolVersion":"2099-01-01","{CAPS}":{{}}}}}}"#
        );
        let ClientRequest::Refused(r) = classify("tools/list", Some(&p), None) else {
            panic!()
        };
        assert_eq!(r.code, UNSUPPORTED_PROTOCOL_VERSION);
        assert_eq!(r.data["supported"], serde_json::json!(["2026-07-28"]));
        assert_eq!(r.data["requested"], "2099-01-01");
        // A modern header over a body without an envelope.
        let h = RouteHeaders {
            version: Some("2026-07-28"),
            method: Some("tools/list"),
            name: None,
        };
        let ClientRequest::Refused(r) = classify("tools/list", None, Some(h)) else {
            panic!()
        };
        assert_eq!(r.code, INVALID_PARAMS);
    }

    #[test]
    fn headers_must_match_the_body() {
        let p = modern_params(r#""name":"héllo","#);
        let good = RouteHeaders {
            version: Some("2026-07-28"),
            method: Some("tools/call"),
            name: Some("=?base64?aMOpbGxv?="),
        };
        assert!(matches!(
            classify("tools/call", Some(&p), Some(good)),
            ClientRequest::Modern(_)
        ));
        for bad in [
            RouteHeaders {
                version: None,
                ..good
            },
            RouteHeaders {
                version: Some("2025-11-25"),
                ..good
            },
            RouteHeaders {
                method: Some("tools/list"),
                ..good
            },
            RouteHeaders {
                name: Some("hello"),
                ..good
            },
            RouteHeaders { name: None, ..good },
            RouteHeaders {
                name: Some("=?base64?aMOpbGxv=?="),
                ..good
            },
        ] {
            let ClientRequest::Refused(r) = classify("tools/call", Some(&p), Some(bad)) else {
                panic!("{bad:?} passed");
            };
            assert_eq!(r.code, HEADER_MISMATCH, "{bad:?}");
        }
    }

    #[test]
    fn stamped_headers_round_trip_through_the_check() {
        let v: Value = serde_json::from_str(&modern_params(r#""uri":" file:///a b ","#)).unwrap();
        let hs = headers_for("2026-07-28", "resources/read", Some(&v));
        let get = |n: &str| hs.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("mcp-name"), Some("=?base64?IGZpbGU6Ly8vYSBiIA==?="));
        let h = RouteHeaders {
            version: get("mcp-protocol-version"),
            method: get("mcp-method"),
            name: get("mcp-name"),
        };
        let text = v.to_string();
        assert!(matches!(
            classify("resources/read", Some(&text), Some(h)),
            ClientRequest::Modern(_)
        ));
        assert_eq!(headers_for("2026-07-28", "tools/list", None).len(), 2);
    }

    #[test]
    fn header_values_encode_and_decode() {
        for s in [
            "plain",
            "",
            "a\u{0}b",
            "  edge",
            "ünï",
            "=?base64?QQ==?=",
            "x\r\ny",
        ] {
            assert_eq!(
                decode_header_value(&encode_header_value(s)).as_deref(),
                Some(s),
                "{s:?}"
            );
        }
        assert_eq!(encode_header_value("tools/call"), "tools/call");
        for bad in [
            "=?base64?QQ=?=",
            "=?base64?QR==?=",
            "=?base64?Q===?=",
            "=?base64?/w==?=",
            "=?base64?*A==?=",
        ] {
            assert_eq!(decode_header_value(bad), None, "{bad}");
        }
    }

    #[test]
    fn param_headers_are_recognised_by_prefix() {
        assert!(is_param_header("Mcp-Param-Region"));
        assert!(is_param_header("mcp-param-x"));
        assert!(!is_param_header("mcp-param-"));
        assert!(!is_param_header("mcp-name"));
    }
}
