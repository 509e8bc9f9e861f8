//! Requests crossing the era line.
//!
//! Toward a modern server, a handshake-era client's request gains the
//! envelope its `initialize` gave once (`StampContext`: version, client info,
//! capabilities, and the level its last `logging/setLevel` asked for). Toward
//! a handshake-era server, a modern request loses the reserved envelope keys:
//! a server that serves both eras refuses an enveloped request on a
//! connection opened with `initialize`. Methods one era has and the other
//! does not are named by `toward_modern` and `toward_handshake`.

use crate::proto::jsonrpc::Raw;
use crate::proto::scan::RESERVED_PREFIX;
use serde_json::{Map, Value, json};

use super::classify::{Envelope, headers_for};
use super::{
    META_CLIENT_CAPABILITIES, META_CLIENT_INFO, META_LOG_LEVEL, META_PROTOCOL_VERSION,
    MODERN_VERSION,
};

/// Searchers built once (building one costs more than a short search).
static FIND_RESERVED: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(RESERVED_PREFIX));
static FIND_RESULT_KEYS: std::sync::LazyLock<[memchr::memmem::Finder<'static>; 3]> =
    std::sync::LazyLock::new(|| {
        [
            memchr::memmem::Finder::new("\"resultType\""),
            memchr::memmem::Finder::new("\"ttlMs\""),
            memchr::memmem::Finder::new("\"cacheScope\""),
        ]
    });

/// Why a message could not be rewritten (it is then answered with an error,
/// never forwarded half-rewritten).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StampError {
    NotAnObject,
    ParamsNotAnObject,
    MetaNotAnObject,
}

/// What a handshake-era client's `initialize` said, kept to stamp each of
/// its later requests toward a modern server.
#[derive(Debug, Clone, PartialEq)]
pub struct StampContext {
    pub client_info: Value,
    pub capabilities: Value,
    /// Set by the client's `logging/setLevel`; without it a modern server
    /// sends no log messages.
    pub log_level: Option<String>,
}

impl StampContext {
    /// From the params of the client's `initialize`.
    pub fn from_initialize(params: &Value) -> StampContext {
        StampContext {
            client_info: params
                .get("clientInfo")
                .filter(|v| v.is_object())
                .cloned()
                .unwrap_or_else(|| {
                    crate::proto::object::object([
                        ("name", serde_json::Value::from("unknown")),
                        ("version", serde_json::Value::from("0")),
                    ])
                }),
            capabilities: params
                .get("capabilities")
                .filter(|v| v.is_object())
                .cloned()
                .unwrap_or_else(|| json!({})),
            log_level: None,
        }
    }

    /// The client's `logging/setLevel` (answered by the relay: the modern
    /// era asks per request).
    pub fn set_level(&mut self, params: Option<&Value>) -> bool {
        match params.and_then(|p| p.get("level")).and_then(Value::as_str) {
            Some(l) => {
                self.log_level = Some(l.to_string());
                true
            }
            None => false,
        }
    }
}

/// HTTP headers, lowercase names.
pub type Headers = Vec<(String, String)>;

/// A handshake-era request stamped for a modern server: the bytes to send
/// and the HTTP headers to send them with. Keys the client set itself in
/// `_meta` are kept (a reserved key it chose wins).
pub fn stamp_modern(line: &[u8], ctx: &StampContext) -> Result<(Vec<u8>, Headers), StampError> {
    let mut msg: Value = serde_json::from_slice(line).map_err(|_| StampError::NotAnObject)?;
    let obj = msg.as_object_mut().ok_or(StampError::NotAnObject)?;
    let method = obj
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let params = obj
        .entry("params")
        .or_insert_with(|| Value::Object(Map::new()));
    let params = params
        .as_object_mut()
        .ok_or(StampError::ParamsNotAnObject)?;
    let meta = params
        .entry("_meta")
        .or_insert_with(|| Value::Object(Map::new()));
    let meta = meta.as_object_mut().ok_or(StampError::MetaNotAnObject)?;
    meta.entry(META_PROTOCOL_VERSION)
        .or_insert_with(|| Value::from(MODERN_VERSION));
    meta.entry(META_CLIENT_INFO)
        .or_insert_with(|| ctx.client_info.clone());
    meta.entry(META_CLIENT_CAPABILITIES)
        .or_insert_with(|| ctx.capabilities.clone());
    if let Some(l) = &ctx.log_level {
        meta.entry(META_LOG_LEVEL)
            .or_insert_with(|| Value::from(l.as_str()));
    }
    let version = meta
        .get(META_PROTOCOL_VERSION)
        .and_then(Value::as_str)
        .unwrap_or(MODERN_VERSION)
        .to_string();
    let headers = headers_for(&version, &method, obj.get("params"));
    Ok((msg.to_string().into_bytes(), headers))
}

/// A modern request stripped for a handshake-era server: the bytes without
/// the reserved `_meta` keys (an emptied `_meta` goes too), and the envelope
/// they carried (`None` when there was none).
pub fn strip_modern(line: &[u8]) -> Result<(Vec<u8>, Option<Envelope>), StampError> {
    let mut msg: Value = serde_json::from_slice(line).map_err(|_| StampError::NotAnObject)?;
    let obj = msg.as_object_mut().ok_or(StampError::NotAnObject)?;
    let Some(params) = obj.get_mut("params") else {
        return Ok((line.to_vec(), None));
    };
    let params = params
        .as_object_mut()
        .ok_or(StampError::ParamsNotAnObject)?;
    let Some(meta) = params.get_mut("_meta") else {
        return Ok((line.to_vec(), None));
    };
    let meta = meta.as_object_mut().ok_or(StampError::MetaNotAnObject)?;
    let envelope = match (
        meta.get(META_PROTOCOL_VERSION),
        meta.get(META_CLIENT_CAPABILITIES),
    ) {
        (Some(Value::String(v)), Some(c)) => Some(Envelope {
            version: v.clone(),
            client_info: meta.get(META_CLIENT_INFO).cloned(),
            capabilities: c.clone(),
            log_level: meta
                .get(META_LOG_LEVEL)
                .and_then(Value::as_str)
                .map(str::to_string),
        }),
        _ => None,
    };
    let before = meta.len();
    meta.retain(|k, _| !k.starts_with(RESERVED_PREFIX));
    if meta.len() == before {
        return Ok((line.to_vec(), envelope));
    }
    if meta.is_empty() {
        params.remove("_meta");
    }
    Ok((msg.to_string().into_bytes(), envelope))
}

/// [`strip_modern`] without re-serializing the message: only
/// `params._meta` is parsed and rewritten (the reserved keys out; an emptied
/// `_meta` stays as `{}`, which every era accepts), everything else is
/// copied byte for byte. `None` when the fast path cannot tell (no `_meta`
/// member found although a reserved key is mentioned, escapes, a message
/// that is not one object): use [`strip_modern`] then.
pub fn strip_fast(line: &[u8]) -> Option<Vec<u8>> {
    let crate::proto::jsonrpc::Message::Single(env) = crate::proto::jsonrpc::peek(line).ok()?
    else {
        return None;
    };
    match strip_edit(env.params)? {
        StripEdit::Keep => Some(line.to_vec()),
        StripEdit::Replace(meta, new) => {
            crate::mcp::shared::splice(line, &mut [(meta, new.as_bytes())])
        }
    }
}

/// What stripping the reserved envelope keys does to a message, told from
/// its `params` alone (already read, borrowed from the message): the
/// fast path of [`strip_fast`] without reading the message again, for a
/// caller that applies the edit together with its own (the mux's id).
#[derive(Debug)]
pub enum StripEdit<'a> {
    /// Nothing reserved: the message goes as it is.
    Keep,
    /// `params._meta` (this value's text, borrowed from the message)
    /// becomes this text (`{}` when nothing is left: no allocation).
    Replace(&'a str, std::borrow::Cow<'static, str>),
}

/// [`StripEdit`] for a message whose `params` is `params`; `None` when the
/// fast path cannot tell (as [`strip_fast`]): use [`strip_modern`] then.
pub fn strip_edit(params: Option<Raw<'_>>) -> Option<StripEdit<'_>> {
    strip_edit_with(params, None)
}

/// [`strip_edit`]; `meta`: `params._meta` when the caller has scanned
/// it already (`Some(None)`: there is none), so `params` is not read
/// again, nor `_meta` when its members were listed or it holds reserved
/// members only (`MetaScan::reserved_only`).
pub fn strip_edit_with<'a>(
    params: Option<Raw<'a>>,
    meta: Option<Option<&crate::mcp::shared::MetaScan<'a>>>,
) -> Option<StripEdit<'a>> {
    let Some(params) = params else {
        return Some(StripEdit::Keep);
    };
    // A `_meta` of reserved members only (as `peek`'s scan saw it) is
    // stripped whole: nothing to search, list or sort.
    if let Some(Some(m)) = meta
        && m.reserved_only
    {
        return Some(StripEdit::Replace(m.text, "{}".into()));
    }
    let text = params.get().as_bytes();
    if FIND_RESERVED.find(text).is_none() {
        return (memchr::memchr(b'\\', text).is_none()).then_some(StripEdit::Keep);
    }
    let (meta, members) = match meta {
        Some(known) => {
            let m = known?;
            (m.text, m.members.as_deref())
        }
        None => (crate::mcp::shared::member(params, "_meta")?.get(), None),
    };
    let new = match members {
        Some(members) => meta_from_members(members),
        None => meta_without_reserved(meta)?,
    };
    Some(StripEdit::Replace(meta, new.into()))
}

/// `_meta`'s text without its reserved keys, the other members' values
/// copied byte for byte (names sorted, the last of duplicates kept, as a
/// parsed `Map` would have them). `None` for anything but an object whose
/// names have no escapes (the full path handles those).
///
/// `meta` was validated where the message entered, so its members are
/// found by the relay's own scan of its text (`shared::object_members`),
/// cheaper than parsing it again; what the scan cannot tell goes to the
/// parser ([`meta_without_reserved_parsed`]).
fn meta_without_reserved(meta: &str) -> Option<String> {
    match crate::mcp::shared::object_members(meta) {
        Some(members) => Some(meta_from_members(&members)),
        None => meta_without_reserved_parsed(meta),
    }
}

/// [`meta_without_reserved`] of `_meta`'s members as scanned (in order,
/// duplicates included, no name with escapes).
fn meta_from_members(all: &[(&str, &str)]) -> String {
    // The reserved keys go first (a modern request's `_meta` usually holds
    // nothing else, and then nothing is sorted or collected).
    let mut members: Vec<(&str, &str)> = all
        .iter()
        .filter(|(name, _)| !name.starts_with(RESERVED_PREFIX))
        .copied()
        .collect();
    // As a map would hold them: sorted by name (stable: duplicates keep
    // their order), then the last of each name.
    members.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = String::with_capacity(2);
    out.push('{');
    for (i, (name, value)) in members.iter().enumerate() {
        let superseded = members.get(i + 1).is_some_and(|next| next.0 == *name);
        if superseded {
            continue;
        }
        if out.len() > 1 {
            out.push(',');
        }
        out.push('"');
        out.push_str(name);
        out.push_str("\":");
        out.push_str(value);
    }
    out.push('}');
    out
}

/// [`meta_without_reserved`] by parsing `meta` into a map.
fn meta_without_reserved_parsed(meta: &str) -> Option<String> {
    let members: std::collections::BTreeMap<&str, &serde_json::value::RawValue> =
        serde_json::from_str(meta).ok()?;
    let mut out = String::with_capacity(2);
    out.push('{');
    for (name, value) in members
        .iter()
        .filter(|(name, _)| !name.starts_with(RESERVED_PREFIX))
    {
        if out.len() > 1 {
            out.push(',');
        }
        // A name borrowed from the text has no escapes: quoting it is
        // writing it back.
        out.push('"');
        out.push_str(name);
        out.push_str("\":");
        out.push_str(value.get());
    }
    out.push('}');
    Some(out)
}

/// A handshake-era server's result made a modern one: `resultType` says it
/// is complete (an older server never sends it; clients read its absence as
/// complete, the relay states it for strict ones).
pub fn mark_complete(result: &mut Value) {
    if let Some(o) = result.as_object_mut() {
        o.entry("resultType")
            .or_insert_with(|| Value::from("complete"));
    }
}

/// A handshake-era server's result made a modern one: `resultType:
/// "complete"` and the cache hints (`ttlMs: 0`, immediately stale;
/// `cacheScope: "private"`) that modern list and read results must carry;
/// results without cache hints in the modern schema ignore them. False (and
/// nothing changed) when it already says what it is or is not an object.
pub fn modernize(result: &mut Value) -> bool {
    let Some(r) = result.as_object_mut() else {
        return false;
    };
    if r.contains_key("resultType") {
        return false;
    }
    r.insert("resultType".into(), Value::from("complete"));
    r.entry("ttlMs").or_insert_with(|| Value::from(0));
    r.entry("cacheScope")
        .or_insert_with(|| Value::from("private"));
    true
}

/// A handshake-era server's response line made a modern one
/// ([`modernize`]). `None`: nothing to change (an error, a result that
/// already says what it is, or not a response object).
pub fn modern_response(line: &[u8]) -> Option<Vec<u8>> {
    if let Some(fast) = modern_response_fast(line) {
        return fast;
    }
    let mut v: Value = serde_json::from_slice(line).ok()?;
    modernize(v.get_mut("result")?).then(|| v.to_string().into_bytes())
}

/// [`modern_response`] by splicing the three members in at the start of
/// the result object, the rest copied byte for byte (the reply's id keeps
/// its spelling). `None`: the fast path cannot tell (the result mentions
/// one of the members, has escapes, or the line is not one response), so
/// the caller parses; `Some(None)`: nothing to change (an error).
fn modern_response_fast(line: &[u8]) -> Option<Option<Vec<u8>>> {
    let text = std::str::from_utf8(line).ok()?;
    // One read of the line finds the result (and validates it); an error
    // reply (rare) is read a second time.
    let Some(result) = crate::mcp::shared::member_of_text(text, "result") else {
        return crate::mcp::shared::member_of_text(text, "error").map(|_| None);
    };
    let edit = modern_result(result.into(), false)?;
    Some(crate::mcp::shared::splice(
        line,
        &mut [(edit.0, edit.1.as_bytes())],
    ))
}

/// A handshake-era result object made modern ([`modernize`]) by writing
/// the three members in at its start, the rest copied byte for byte: the
/// edit that does it, the result's opening brace (borrowed from the
/// message) and what replaces it. `None` when that cannot
/// be told without parsing (not an object, escapes, or it mentions one of
/// the members already): the caller takes the full path.
///
/// `checked`: the caller knows `result` is an object whose member names are
/// plain and none of the three (`Envelope::result_unstamped`), so its text
/// is not searched.
pub fn modern_result<'a>(result: Raw<'a>, checked: bool) -> Option<(&'a str, &'static str)> {
    let r = result.get();
    let body = r.strip_prefix('{')?;
    let rb = r.as_bytes();
    if !checked
        && (memchr::memchr(b'\\', rb).is_some()
            || FIND_RESULT_KEYS.iter().any(|f| f.find(rb).is_some()))
    {
        return None;
    }
    // The opening brace becomes the brace and the three members: an edit
    // of one byte, so the result is copied once, by the splice, and no
    // string is made for it.
    const HEAD: &str = r#"{"resultType":"complete","ttlMs":0,"cacheScope":"private""#;
    const HEAD_AND_COMMA: &str = r#"{"resultType":"complete","ttlMs":0,"cacheScope":"private","#;
    let brace = r.get(..1)?;
    if body.trim_start().starts_with('}') {
        Some((brace, HEAD))
    } else {
        Some((brace, HEAD_AND_COMMA))
    }
}

/// What the relay does with a handshake-era client's message on its way to
/// a modern server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TowardModern {
    /// Stamp it and send it.
    Forward,
    /// `initialize`: answered from the server's `server/discover`.
    AnswerInitialize,
    /// `notifications/initialized`: the modern era has no handshake; dropped.
    Drop,
    /// `ping`: gone from the modern era; answered `{}` by the relay.
    AnswerEmpty,
    /// `logging/setLevel`: kept for the stamps, answered `{}`.
    SetLevel,
    /// `resources/subscribe` / `unsubscribe`: folded into the relay's one
    /// `subscriptions/listen` toward the server (`listen`).
    Subscribe,
    Unsubscribe,
}

pub fn toward_modern(method: &str) -> TowardModern {
    match method {
        "initialize" => TowardModern::AnswerInitialize,
        "notifications/initialized" => TowardModern::Drop,
        "ping" => TowardModern::AnswerEmpty,
        "logging/setLevel" => TowardModern::SetLevel,
        "resources/subscribe" => TowardModern::Subscribe,
        "resources/unsubscribe" => TowardModern::Unsubscribe,
        _ => TowardModern::Forward,
    }
}

/// What the relay does with a modern client's message on its way to a
/// handshake-era server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TowardHandshake {
    /// Strip the envelope and send it.
    Forward,
    /// `server/discover`: answered from the relay's own `initialize`.
    AnswerDiscover,
    /// `subscriptions/listen`: mapped by `listen`.
    Listen,
}

pub fn toward_handshake(method: &str) -> TowardHandshake {
    match method {
        "server/discover" => TowardHandshake::AnswerDiscover,
        "subscriptions/listen" => TowardHandshake::Listen,
        _ => TowardHandshake::Forward,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::era::classify::{ClientRequest, RouteHeaders, classify};

    /// `_meta` read by the relay's own scan of its (already validated)
    /// text gives what a parsed map gives: names sorted, the last of
    /// duplicates kept, reserved keys gone, values byte for byte; what the
    /// scan cannot tell (escaped names) is left to the parser, which
    /// refuses it as before (issue 13).
    #[test]
    fn meta_is_stripped_by_the_scan_as_by_the_parser() {
        let cases = [
            r#"{}"#,
            r#" { } "#,
            r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"c","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}"#,
            r#"{"progressToken":7,"io.modelcontextprotocol/protocolVersion":"2026-07-28"}"#,
            "{ \"z\" : [1, {\"a\": \"}]\\\"\"}] ,\n\t\"b\":null,\"a\":-1.5e3 , \"io.modelcontextprotocol/x\":true}",
            r#"{"dup":1,"io.modelcontextprotocol/logLevel":"info","dup":{"k":"v"}}"#,
            r#"{"s":"caf\u00e9 \"quoted\" ","n":0,"f":false,"e":[],"o":{}}"#,
            r#"{"caf\u00e9":1}"#,
            r#"{"ünïcode":"välue","io.modelcontextprotocol/a":1}"#,
        ];
        for text in cases {
            let meta = serde_json::from_str::<&serde_json::value::RawValue>(text)
                .expect("json")
                .get();
            assert_eq!(
                meta_without_reserved(meta),
                meta_without_reserved_parsed(meta),
                "{text}"
            );
        }
        let meta = serde_json::from_str::<&serde_json::value::RawValue>(cases[4])
            .expect("json")
            .get();
        assert_eq!(
            meta_without_reserved(meta).as_deref(),
            Some(r#"{"a":-1.5e3,"b":null,"z":[1, {"a": "}]\""}]}"#)
        );
        let meta = serde_json::from_str::<&serde_json::value::RawValue>(cases[7])
            .expect("json")
            .get();
        assert_eq!(meta_without_reserved(meta), None);
    }

    fn ctx() -> StampContext {
        StampContext::from_initialize(&json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {"sampling": {}},
            "clientInfo": {"name": "old", "version": "1"},
        }))
    }

    fn v(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn a_stamped_request_passes_the_modern_check_with_its_headers() {
        let line = br#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","arguments":{},"_meta":{"progressToken":9}}}"#;
        let (out, headers) = stamp_modern(line, &ctx()).unwrap();
        let m = v(&out);
        assert_eq!(m["id"], 4);
        assert_eq!(m["params"]["_meta"]["progressToken"], 9);
        assert_eq!(m["params"]["_meta"][META_CLIENT_INFO]["name"], "old");
        assert!(m["params"]["_meta"].get(META_LOG_LEVEL).is_none());
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("mcp-name"), Some("echo"));
        let h = RouteHeaders {
            version: get("mcp-protocol-version"),
            method: get("mcp-method"),
            name: get("mcp-name"),
        };
        let params = m["params"].to_string();
        let ClientRequest::Modern(e) = classify("tools/call", Some(&params), Some(h)) else {
            panic!("stamped request refused");
        };
        assert_eq!(e.capabilities, json!({"sampling": {}}));
    }

    #[test]
    fn stamping_adds_params_and_the_log_level_and_keeps_the_clients_own_keys() {
        let mut c = ctx();
        assert!(c.set_level(Some(&json!({"level": "debug"}))));
        assert!(!c.set_level(Some(&json!({"level": 3}))));
        let (out, _) =
            stamp_modern(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#, &c).unwrap();
        assert_eq!(v(&out)["params"]["_meta"][META_LOG_LEVEL], "debug");
        let own = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{"_meta":{{"{META_LOG_LEVEL}":"error"}}}}}}"#
        );
        let (out, _) = stamp_modern(own.as_bytes(), &c).unwrap();
        assert_eq!(v(&out)["params"]["_meta"][META_LOG_LEVEL], "error");
        let defaults = StampContext::from_initialize(&json!({"clientInfo": 5}));
        assert_eq!(defaults.capabilities, json!({}));
        assert_eq!(defaults.client_info["name"], "unknown");
    }

    #[test]
    fn stamping_refuses_what_it_cannot_rewrite() {
        assert_eq!(stamp_modern(b"[1]", &ctx()), Err(StampError::NotAnObject));
        assert_eq!(stamp_modern(b"nope", &ctx()), Err(StampError::NotAnObject));
        let p = br#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}"#;
        assert_eq!(stamp_modern(p, &ctx()), Err(StampError::ParamsNotAnObject));
        let p = br#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":"s"}}"#;
        assert_eq!(stamp_modern(p, &ctx()), Err(StampError::MetaNotAnObject));
    }

    #[test]
    fn stripping_removes_only_reserved_keys_and_returns_the_envelope() {
        let line = format!(
            r#"{{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{{"name":"n","_meta":{{"progressToken":"p","{META_PROTOCOL_VERSION}":"2026-07-28","{META_CLIENT_CAPABILITIES}":{{"roots":{{}}}},"{META_LOG_LEVEL}":"info"}}}}}}"#
        );
        let (out, env) = strip_modern(line.as_bytes()).unwrap();
        let m = v(&out);
        assert_eq!(m["params"]["_meta"], json!({"progressToken": "p"}));
        assert_eq!(m["params"]["name"], "n");
        let env = env.unwrap();
        assert_eq!(env.version, "2026-07-28");
        assert_eq!(env.log_level.as_deref(), Some("info"));
        assert_eq!(env.capabilities, json!({"roots": {}}));
        // Only reserved keys: `_meta` goes with them.
        let line = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{"_meta":{{"{META_PROTOCOL_VERSION}":"2026-07-28","{META_CLIENT_CAPABILITIES}":{{}}}}}}}}"#
        );
        let (out, _) = strip_modern(line.as_bytes()).unwrap();
        assert_eq!(v(&out)["params"], json!({}));
        // Nothing to strip: the very bytes come back.
        let plain = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"progressToken":1}}}"#;
        assert_eq!(strip_modern(plain).unwrap(), (plain.to_vec(), None));
        let bare = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        assert_eq!(strip_modern(bare).unwrap(), (bare.to_vec(), None));
        assert_eq!(strip_modern(b"7"), Err(StampError::NotAnObject));
    }

    #[test]
    fn results_are_marked_complete_without_overriding() {
        let mut r = json!({"tools": []});
        mark_complete(&mut r);
        assert_eq!(r["resultType"], "complete");
        let mut r = json!({"resultType": "input_required"});
        mark_complete(&mut r);
        assert_eq!(r["resultType"], "input_required");
        let mut r = json!(null);
        mark_complete(&mut r);
        assert_eq!(r, json!(null));
    }

    #[test]
    fn handshake_responses_become_modern_ones() {
        let out = modern_response(br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#).unwrap();
        let r = &v(&out)["result"];
        assert_eq!(
            (
                r["resultType"].clone(),
                r["ttlMs"].clone(),
                r["cacheScope"].clone()
            ),
            (json!("complete"), json!(0), json!("private"))
        );
        assert_eq!(v(&out)["id"], 1);
        let hinted = br#"{"jsonrpc":"2.0","id":1,"result":{"ttlMs":5}}"#;
        assert_eq!(v(&modern_response(hinted).unwrap())["result"]["ttlMs"], 5);
        for none in [
            &br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"complete"}}"#[..],
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m"}}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":[]}"#,
            b"[]",
            b"nope",
        ] {
            assert_eq!(modern_response(none), None);
        }
    }

    #[test]
    fn methods_one_era_lacks_are_named() {
        assert_eq!(toward_modern("initialize"), TowardModern::AnswerInitialize);
        assert_eq!(
            toward_modern("notifications/initialized"),
            TowardModern::Drop
        );
        assert_eq!(toward_modern("ping"), TowardModern::AnswerEmpty);
        assert_eq!(toward_modern("logging/setLevel"), TowardModern::SetLevel);
        assert_eq!(
            toward_modern("resources/subscribe"),
            TowardModern::Subscribe
        );
        assert_eq!(
            toward_modern("resources/unsubscribe"),
            TowardModern::Unsubscribe
        );
        assert_eq!(toward_modern("tools/call"), TowardModern::Forward);
        assert_eq!(
            toward_handshake("server/discover"),
            TowardHandshake::AnswerDiscover
        );
        assert_eq!(
            toward_handshake("subscriptions/listen"),
            TowardHandshake::Listen
        );
        assert_eq!(toward_handshake("tools/call"), TowardHandshake::Forward);
    }

    #[test]
    fn the_fast_strip_splices_meta_alone_and_agrees_with_the_full_one() {
        let line = br#"{"jsonrpc":"2.0","id":1e0,"method":"tools/call","params":{"name":"echo","arguments":{"text":"a"},"_meta":{"progressToken":7,"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
        let fast = strip_fast(line).expect("fast path");
        let text = String::from_utf8(fast.clone()).unwrap();
        assert!(text.starts_with(r#"{"jsonrpc":"2.0","id":1e0,"#), "{text}");
        assert!(!text.contains("io.modelcontextprotocol"), "{text}");
        let (slow, _) = strip_modern(line).unwrap();
        assert_eq!(v(&fast), v(&slow));
        // Emptied: `_meta` stays, empty.
        let only = br#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
        assert_eq!(
            v(&strip_fast(only).unwrap())["params"],
            json!({"_meta": {}})
        );
        // Nothing reserved: unchanged; an escape anywhere: the slow path.
        let plain = br#"{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{}}"#;
        assert_eq!(strip_fast(plain).unwrap(), plain.to_vec());
        let escaped = br#"{"jsonrpc":"2.0","id":3,"method":"x","params":{"_meta":{"io.modelcontextprotocol\/protocolVersion":"2026-07-28"}}}"#;
        assert_eq!(strip_fast(escaped), None);
        assert_eq!(strip_fast(b"[1]"), None);
    }

    /// The edit form of the fast strip (issue 13): the other `_meta`
    /// members keep their bytes; anything it cannot tell goes the full way.
    #[test]
    fn the_strip_edit_names_meta_and_its_new_text() {
        let read = |line: &'static [u8]| match crate::proto::jsonrpc::peek(line) {
            Ok(crate::proto::jsonrpc::Message::Single(env)) => env.params,
            _ => panic!("one message"),
        };
        let line = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","_meta":{"z":1.50,"io.modelcontextprotocol/clientInfo":{"name":"c"},"progressToken":7, "a" : [ 1 ]}}}"#;
        let Some(StripEdit::Replace(meta, new)) = strip_edit(read(line)) else {
            panic!("an edit")
        };
        assert!(meta.starts_with(r#"{"z":1.50,"#), "{meta}");
        assert_eq!(new, r#"{"a":[ 1 ],"progressToken":7,"z":1.50}"#);
        let (slow, _) = strip_modern(line).unwrap();
        let spliced = crate::mcp::shared::splice(line, &mut [(meta, new.as_bytes())]).unwrap();
        assert_eq!(v(&spliced), v(&slow));
        assert_eq!(strip_fast(line).unwrap(), spliced);
        // Only reserved keys: `{}`; nothing reserved or no params: kept.
        let only = br#"{"jsonrpc":"2.0","id":2,"method":"m","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
        assert!(matches!(strip_edit(read(only)), Some(StripEdit::Replace(_, n)) if n == "{}"));
        let plain = br#"{"jsonrpc":"2.0","id":3,"method":"m","params":{"_meta":{"a":1}}}"#;
        assert!(matches!(strip_edit(read(plain)), Some(StripEdit::Keep)));
        assert!(matches!(strip_edit(None), Some(StripEdit::Keep)));
        // An escaped name, a reserved key outside `_meta`, `_meta` not an
        // object: the full path.
        let escaped = br#"{"jsonrpc":"2.0","id":4,"method":"m","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"x","\u0061":1}}}"#;
        assert!(strip_edit(read(escaped)).is_none());
        let outside = br#"{"jsonrpc":"2.0","id":5,"method":"m","params":{"arguments":{"io.modelcontextprotocol/x":1}}}"#;
        assert!(strip_edit(read(outside)).is_none());
        let not_object = br#"{"jsonrpc":"2.0","id":6,"method":"m","params":{"_meta":["io.modelcontextprotocol/x"]}}"#;
        assert!(strip_edit(read(not_object)).is_none());
    }

    /// With `_meta` as the front scanned it, the strip edits the same text
    /// into the same bytes as when it looks `_meta` up itself.
    #[test]
    fn the_strip_edit_from_a_scanned_meta_is_the_looked_up_one() {
        fn edit(e: Option<StripEdit<'_>>) -> Option<Option<(usize, String, String)>> {
            match e? {
                StripEdit::Keep => Some(None),
                StripEdit::Replace(meta, new) => Some(Some((
                    meta.as_ptr().addr(),
                    meta.to_string(),
                    new.into_owned(),
                ))),
            }
        }
        let lines: [&[u8]; 10] = [
            br#"{"id":1,"method":"m","params":{"name":"echo","_meta":{"z":1.50,"io.modelcontextprotocol/clientInfo":{"name":"c"},"progressToken":7, "a" : [ 1 ]}}}"#,
            br#"{"id":2,"method":"m","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
            br#"{"id":3,"method":"m","params":{"_meta":{"a":1}}}"#,
            br#"{"id":4,"method":"m","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"x","\u0061":1}}}"#,
            br#"{"id":5,"method":"m","params":{"arguments":{"io.modelcontextprotocol/x":1}}}"#,
            br#"{"id":6,"method":"m","params":{"_meta":["io.modelcontextprotocol/x"]}}"#,
            br#"{"id":7,"method":"m","params":{"_meta":{"b":1,"io.modelcontextprotocol/a":2,"b":{"c":3},"a":"io.modelcontextprotocol/"}}}"#,
            br#"{"id":9,"method":"m","params":{ "_meta" : { "io.modelcontextprotocol/a" : 2 , "k" : "v" } }}"#,
            // Reserved members only, as the scan sees them (stripped whole),
            // and a case that is not: an escaped name. (A `_meta` written
            // twice is marked by `peek` and refused: `proto::unique`.)
            br#"{"id":10,"method":"m","params":{"_meta":{"io.modelcontextprotocol/a":{"x":[1]}, "io.modelcontextprotocol/a":2}}}"#,
            br#"{"id":12,"method":"m","params":{"_meta":{"io.modelcontextprotocol/a":1,"io.modelcontextprotocol\/b":2}}}"#,
        ];
        for line in lines {
            let Ok(crate::proto::jsonrpc::Message::Single(env)) = crate::proto::jsonrpc::peek(line)
            else {
                panic!("one message")
            };
            let text = String::from_utf8_lossy(line);
            // `params` scanned on its own, and as `peek`'s scan recorded it.
            let scanned = env
                .params
                .and_then(|p| crate::mcp::shared::scan_params(p.get()));
            let recorded = crate::mcp::shared::param_scan(&env);
            for scan in [scanned, recorded] {
                let meta = scan.as_ref().map(|s| s.meta.as_ref());
                assert_eq!(
                    edit(strip_edit_with(env.params, meta)),
                    edit(strip_edit(env.params)),
                    "{text}"
                );
            }
            let reserved_only = env.params_spans.is_some_and(|s| s.meta_reserved_only);
            let expected = matches!(env.id(), Some(crate::proto::jsonrpc::Id::Num(2 | 10)));
            assert_eq!(reserved_only, expected, "reserved only: {text}");
        }
    }

    #[test]
    fn the_fast_result_stamp_keeps_the_bytes_and_agrees_with_the_full_one() {
        let line =
            br#"{"jsonrpc":"2.0","id":1e0,"result":{"content":[{"type":"text","text":"x"}]}}"#;
        let out = modern_response(line).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with(r#"{"jsonrpc":"2.0","id":1e0,"result":{"resultType":"complete","ttlMs":0,"cacheScope":"private","content""#), "{text}");
        let mut slow: Value = v(line);
        modernize(slow.get_mut("result").unwrap());
        assert_eq!(v(&out), slow);
        let empty = br#"{"jsonrpc":"2.0","id":2,"result":{ }}"#;
        assert_eq!(
            v(&modern_response(empty).unwrap())["result"],
            json!({"resultType": "complete", "ttlMs": 0, "cacheScope": "private"})
        );
        // Already modern, an error, not a response: nothing to change.
        let done = br#"{"jsonrpc":"2.0","id":3,"result":{"resultType":"input_required"}}"#;
        assert_eq!(modern_response(done), None);
        let err = br#"{"jsonrpc":"2.0","id":4,"error":{"code":1,"message":"m"}}"#;
        assert_eq!(modern_response(err), None);
        assert_eq!(modern_response(b"nonsense"), None);
        // A result mentioning a member elsewhere goes the full way, once.
        let nested = br#"{"jsonrpc":"2.0","id":5,"result":{"data":{"ttlMs":1}}}"#;
        let out = v(&modern_response(nested).unwrap());
        assert_eq!(out["result"]["ttlMs"], 0);
        assert_eq!(out["result"]["data"]["ttlMs"], 1);
    }
}
