//! JSON-RPC 2.0 envelopes, read without building a document tree.
//!
//! The relay needs only a message's `id`, `method`, and (rarely) a few fields
//! of `params`; everything else passes through as the original bytes. `peek`
//! validates the whole message as JSON and allocates nothing for the common
//! case: a single message through the relay's own scan (`proto::scan`),
//! which records `params`' members the fronts read on the way, and through
//! serde_json whatever the scan leaves to it; a batch is split by serde_json
//! and each of its elements read the same way (`peek_raw`).

use std::fmt;
use std::hash::{Hash, Hasher};

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// A request id, normalised so that `"a"` and `"\u0061"` are the same id,
/// and numbers are compared by value: `1`, `1.0`, `1e0` and `10e-1` are one
/// id, and so are `0` and `-0` (a server that parses ids into f64 or i64 and
/// writes them back re-spells them; issue 11, class 13). A number that is
/// not integral, or beyond i64, is keyed by the f64 it parses to (so 2^64
/// matches `1.8446744073709552e19`); two such ids that only differ beyond
/// f64 precision are one id, and the second is refused as a duplicate while
/// the first is in flight, never answered crosswise. Owners that write an
/// id back to its sender use the text it was sent with (`Request::id_text`).
#[derive(Debug, PartialEq, Eq)]
pub enum Id {
    /// An integral number within i64, however it was written.
    Num(i64),
    Str(Box<str>),
    /// Any other JSON value: a number by its value (`{:e}` of its f64, e.g.
    /// `1.5e0`), or the text of anything else (null, …).
    Other(Box<str>),
}

/// Ids are cloned in some three hundred places (answers, timeouts, pending
/// tables): the clone is one out-of-line function instead of a match, an
/// allocation and a copy inlined at each of them. (Copying a number inline
/// and calling out only for strings measured 6.8 KB larger.)
impl Clone for Id {
    #[inline]
    fn clone(&self) -> Id {
        clone_id(self)
    }
}

#[inline(never)]
fn clone_id(id: &Id) -> Id {
    match id {
        Id::Num(n) => Id::Num(*n),
        Id::Str(s) => Id::Str(s.clone()),
        Id::Other(s) => Id::Other(s.clone()),
    }
}

/// A number is hashed as its one word, a text as its bytes and a tag byte
/// (telling `Str` from `Other`). A request id is hashed with the keyed
/// SipHash some seven times a request, and a tag byte before the number
/// made its eight bytes straddle the hasher's buffered byte, which std's
/// SipHash handles the slow way (~70 instructions a hash). A number and a
/// text may share a hash (a collision, never an equality).
impl Hash for Id {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Id::Num(n) => state.write_i64(*n),
            Id::Str(s) => {
                state.write(s.as_bytes());
                state.write_u8(1);
            }
            Id::Other(s) => {
                state.write(s.as_bytes());
                state.write_u8(2);
            }
        }
    }
}

impl Id {
    pub fn from_raw<'a>(raw: impl Into<Raw<'a>>) -> Id {
        let text = raw.into().get();
        if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
            if !inner.contains('\\') {
                return Id::Str(inner.into());
            }
            if let Ok(s) = serde_json::from_str::<String>(text) {
                return Id::Str(s.into());
            }
        }
        if let Ok(n) = text.parse::<i64>() {
            return Id::Num(n);
        }
        Id::number(text).unwrap_or_else(|| Id::Other(text.into()))
    }

    pub fn from_value(v: &serde_json::Value) -> Id {
        match v {
            serde_json::Value::String(s) => Id::Str(s.as_str().into()),
            serde_json::Value::Number(n) if n.is_i64() => Id::Num(n.as_i64().unwrap_or(0)),
            serde_json::Value::Number(n) => {
                let text = n.to_string();
                Id::number(&text).unwrap_or_else(|| Id::Other(text.into()))
            }
            other => Id::Other(other.to_string().into()),
        }
    }

    /// A JSON number (already validated as one) that is not an i64 as
    /// written, by its value: integral within i64 → `Num`, else the f64's
    /// `{:e}` text. `None` if it is not a number or beyond f64 (`1e400`).
    fn number(text: &str) -> Option<Id> {
        if !matches!(text.as_bytes().first(), Some(b'-' | b'0'..=b'9')) {
            return None;
        }
        let f: f64 = text.parse().ok()?;
        if !f.is_finite() {
            return None;
        }
        // 2^63 is exactly representable; i64 ends one below it.
        const LIMIT: f64 = 9_223_372_036_854_775_808.0;
        if f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f) {
            return Some(Id::Num(f as i64));
        }
        Some(Id::Other(format!("{f:e}").into()))
    }

    /// Whether `raw` (this id as some peer wrote it) is spelled as `to_json`
    /// writes it: if not, an owner keeps the text to give it back.
    pub fn is_spelled(&self, raw: &str) -> bool {
        match self {
            // JSON has no `+` or leading zeros; `-0` is the one other
            // spelling an i64 parse accepts.
            Id::Num(n) => raw.parse::<i64>() == Ok(*n) && raw != "-0",
            Id::Str(s) => raw.len() == s.len() + 2 && raw.get(1..raw.len() - 1) == Some(&**s),
            Id::Other(t) => &**t == raw,
        }
    }

    /// The id as JSON text.
    pub fn to_json(&self) -> String {
        match self {
            Id::Num(n) => n.to_string(),
            Id::Str(s) => serde_json::Value::String(s.to_string()).to_string(),
            Id::Other(t) => t.to_string(),
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

/// Finds `progressToken` in a message's text: built once (a searcher made
/// per call cost some 700 instructions, twice a request).
pub(crate) static FIND_PROGRESS_TOKEN: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new("progressToken"));

/// A JSON value's text borrowed from a message that was validated whole
/// (`peek`): exactly the value, no whitespace around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raw<'a>(&'a str);

impl<'a> Raw<'a> {
    /// Only for text known to be one valid JSON value.
    pub(crate) fn new(text: &'a str) -> Raw<'a> {
        Raw(text)
    }

    pub fn get(self) -> &'a str {
        self.0
    }
}

impl<'a> From<&'a RawValue> for Raw<'a> {
    fn from(r: &'a RawValue) -> Raw<'a> {
        Raw(r.get())
    }
}

/// The fields of one JSON-RPC message the relay looks at.
#[derive(Debug, Default)]
pub struct Envelope<'a> {
    pub id: Option<Raw<'a>>,
    pub method: Option<Raw<'a>>,
    pub params: Option<Raw<'a>>,
    /// Its `result` (the last, if the name repeats): kept, not only
    /// skipped, so a bridge that edits a result does not read the line
    /// again (`mcp::shared`, era bridging).
    pub result: Option<Raw<'a>>,
    /// Has a `result` or an `error` member.
    pub is_response: bool,
    /// `params`' members the relay reads, recorded by the relay's own scan
    /// as it validated them (`proto::scan`); `None` when serde_json read
    /// the message, or `params` is no object or has a member name with
    /// escapes (`shared::scan_params` then reads `params`).
    pub params_spans: Option<super::scan::ParamSpans<'a>>,
    /// The scan found `method` a string without escapes: its text between
    /// the quotes is the name. `false` says nothing.
    pub method_plain: bool,
    /// The scan found `result` an object whose member names are plain and
    /// none of `resultType`, `ttlMs`, `cacheScope`: the era bridge may
    /// write them in at its start (`stamp::modern_result`). `false` says
    /// nothing.
    pub result_unstamped: bool,
    /// A member the relay reads written twice (`proto::unique`), named
    /// (`"id"`, `"params.name"`, …): a client's message so marked is
    /// refused. The fields above hold the last of the duplicates.
    pub ambiguous: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    Response,
    /// A JSON object that is none of the above.
    Invalid,
}

impl<'a> Envelope<'a> {
    /// The message's JSON-RPC shape. A method must be a string; a request's
    /// id a string or a number (MCP: never null), and its method not a
    /// `notifications/` one; a response's id may be null (an error about a
    /// request whose id could not be read). Anything else is `Invalid`,
    /// answered -32600 and never forwarded.
    pub fn kind(&self) -> Kind {
        let method_ok = self.method.map(|m| m.get().starts_with('"'));
        let id_ok = |null_ok: bool| {
            self.id.is_some_and(|i| {
                let t = i.get().as_bytes();
                matches!(t.first(), Some(b'"' | b'-' | b'0'..=b'9')) || (null_ok && t == b"null")
            })
        };
        // MCP: `notifications/*` are notifications; one with an id is no
        // request (issue 11, class 10: a request-shaped cancel would carry a
        // `requestId` past the shared mux's translation).
        let notification_method = || {
            self.method()
                .is_some_and(|m| m.starts_with("notifications/"))
        };
        match (method_ok, self.id.is_some(), self.is_response) {
            (Some(true), true, false) if id_ok(false) && !notification_method() => Kind::Request,
            (Some(true), false, false) => Kind::Notification,
            (None, true, true) if id_ok(true) => Kind::Response,
            _ => Kind::Invalid,
        }
    }

    pub fn id(&self) -> Option<Id> {
        self.id.map(Id::from_raw)
    }

    /// The method name, borrowed when it has no escapes.
    pub fn method(&self) -> Option<std::borrow::Cow<'a, str>> {
        let text = self.method?.get();
        let inner = text.strip_prefix('"')?.strip_suffix('"')?;
        if self.method_plain || !inner.contains('\\') {
            return Some(inner.into());
        }
        serde_json::from_str::<String>(text).ok().map(Into::into)
    }

    pub fn method_is(&self, name: &str) -> bool {
        self.method().is_some_and(|m| m == name)
    }

    /// `params.<key>` where `key` names a top-level member (e.g.
    /// `progressToken`, `requestId`), only parsed when the text mentions it.
    pub fn param_id(&self, key: &str) -> Option<Id> {
        let params = self.params?;
        memchr::memmem::find(params.get().as_bytes(), key.as_bytes())?;
        let v: serde_json::Value = serde_json::from_str(params.get()).ok()?;
        v.get(key).map(Id::from_value)
    }

    /// `params.<key>` when it is a string (e.g. `protocolVersion`).
    pub fn param_str(&self, key: &str) -> Option<String> {
        let params = self.params?;
        memchr::memmem::find(params.get().as_bytes(), key.as_bytes())?;
        let v: serde_json::Value = serde_json::from_str(params.get()).ok()?;
        v.get(key)?.as_str().map(str::to_string)
    }

    /// `params._meta.progressToken` of a request.
    pub fn progress_token(&self) -> Option<Id> {
        let params = self.params?;
        FIND_PROGRESS_TOKEN.find(params.get().as_bytes())?;
        let v: serde_json::Value = serde_json::from_str(params.get()).ok()?;
        v.get("_meta")?.get("progressToken").map(Id::from_value)
    }
}

/// One line's content: a single message or a batch of raw elements.
pub enum Message<'a> {
    Single(Envelope<'a>),
    Batch(Vec<&'a RawValue>),
}

/// Parses a line. Errors mean the bytes are not JSON at all (or not an
/// object/array at the top).
pub fn peek(bytes: &[u8]) -> Result<Message<'_>, serde_json::Error> {
    // Every message that crosses the relay is UTF-8 as a whole, not only
    // the members the relay reads (serde_json checks the rest only when it
    // keeps it as text): one pass here, and none again below.
    let text = std::str::from_utf8(bytes)
        .map_err(|e| <serde_json::Error as de::Error>::custom(format!("invalid UTF-8: {e}")))?;
    let first = text.bytes().find(|b| !b.is_ascii_whitespace());
    if first == Some(b'[') {
        return serde_json::from_str::<Vec<&RawValue>>(text).map(Message::Batch);
    }
    envelope(text).map(Message::Single)
}

/// One message's envelope: the relay's own scan, and serde_json for what
/// the scan leaves to it (`proto::scan`), whose verdict and error stand.
fn envelope(text: &str) -> Result<Envelope<'_>, serde_json::Error> {
    match super::scan::envelope(text) {
        Some(env) => Ok(env),
        None => serde_envelope(text),
    }
}

/// The envelope as serde_json reads it: the fallback of the scan, and its
/// reference in tests and fuzzing.
pub fn serde_envelope(text: &str) -> Result<Envelope<'_>, serde_json::Error> {
    serde_json::from_str::<Envelope>(text)
}

/// Parses one element of a batch.
pub fn peek_raw(raw: &RawValue) -> Option<Envelope<'_>> {
    envelope(raw.get()).ok()
}

/// Why the relay dropped a message instead of passing it on; counted in
/// `mcp_relay_messages_dropped_total{reason}` and logged at debug, rate
/// limited (issue 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Shared pool: a server notification that cannot be told to belong to
    /// one session (class 9).
    Unattributed,
    /// Shared pool: a client's `notifications/cancelled` naming no request
    /// of its own session in flight (class 10).
    CancelNotInFlight,
    /// A server's batch holding an array (class 13).
    BatchNested,
    /// A server's empty batch `[]` (class 13).
    BatchEmpty,
    /// A server's batch element that is no JSON-RPC object (class 13).
    BatchInvalidItem,
    /// A handshake-era server's log message for a 2026-07-28 request that
    /// did not opt in to logs at its level (`io.modelcontextprotocol/logLevel`).
    LogNotOptedIn,
    /// `reverse --url`, a relay-owned session: a server request that no
    /// single 2026-07-28 call in flight can carry (answered with an error).
    UnattributedRequest,
    /// `reverse`, the session pool: a reply to a request no longer in
    /// flight (the client cancelled it, or it timed out).
    LateReply,
    /// Shared pool: a server→client request over the mux's cap of requests
    /// awaiting their answers (`shared::MAX_SERVER_REQUESTS`); the server
    /// is answered with an error.
    ServerRequestsFull,
}

impl Dropped {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Dropped::Unattributed => "unattributed_notification",
            Dropped::CancelNotInFlight => "cancel_not_in_flight",
            Dropped::BatchNested => "batch_nested",
            Dropped::BatchEmpty => "batch_empty",
            Dropped::BatchInvalidItem => "batch_invalid_item",
            Dropped::LogNotOptedIn => "log_not_opted_in",
            Dropped::LateReply => "late_reply",
            Dropped::ServerRequestsFull => "server_requests_full",
            Dropped::UnattributedRequest => "unattributed_request",
        }
    }
}

/// One element of a batch received from a server.
pub enum BatchItem<'a> {
    /// An object: a message whose shape `kind` tells.
    Msg(Envelope<'a>),
    /// A nested array, which JSON-RPC does not allow: it goes nowhere. The
    /// ids of the responses inside it (one level down) name requests that
    /// must still be answered, with an error.
    Nested(Vec<Id>),
    /// Anything else (a number, a string, …): goes nowhere.
    Invalid,
}

/// Classifies one element of a batch received from a server.
pub fn batch_item(raw: &RawValue) -> BatchItem<'_> {
    let text = raw.get();
    if text.starts_with('[') {
        let inner = serde_json::from_str::<Vec<&RawValue>>(text).unwrap_or_default();
        let ids = inner
            .iter()
            .filter_map(|r| peek_raw(r))
            .filter(|e| e.kind() == Kind::Response)
            .filter_map(|e| e.id())
            .collect();
        return BatchItem::Nested(ids);
    }
    match peek_raw(raw) {
        Some(env) => BatchItem::Msg(env),
        None => BatchItem::Invalid,
    }
}

impl<'de: 'a, 'a> de::Deserialize<'de> for Envelope<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Envelope<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON-RPC message object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope<'a>, A::Error> {
                let mut env = Envelope::default();
                // A member the relay reads, written twice, marks the message
                // (`proto::unique`); the last is kept.
                let mut twice = None;
                let mut once = |slot: &mut Option<Raw<'a>>, raw: Raw<'a>, name: &'static str| {
                    if slot.replace(raw).is_some() {
                        twice = twice.or(Some(name));
                    }
                };
                while let Some(key) = map.next_key::<KeyName>()? {
                    match key {
                        KeyName::Id => once(&mut env.id, raw(&mut map)?, "id"),
                        KeyName::Method => once(&mut env.method, raw(&mut map)?, "method"),
                        KeyName::Params => once(&mut env.params, raw(&mut map)?, "params"),
                        KeyName::Result => {
                            once(&mut env.result, raw(&mut map)?, "result");
                            env.is_response = true;
                        }
                        KeyName::Error => {
                            map.next_value::<IgnoredAny>()?;
                            env.is_response = true;
                        }
                        KeyName::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                env.ambiguous = twice.or_else(|| {
                    env.params
                        .and_then(|p| super::unique::ambiguous_params(p.get()))
                });
                Ok(env)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Envelope<'a>, A::Error> {
                Err(de::Error::custom("unexpected array"))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

fn raw<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Raw<'de>, A::Error> {
    map.next_value::<&'de RawValue>().map(Raw::from)
}

enum KeyName {
    Id,
    Method,
    Params,
    Result,
    Error,
    Other,
}

impl<'de> de::Deserialize<'de> for KeyName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct K;
        impl Visitor<'_> for K {
            type Value = KeyName;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyName, E> {
                Ok(match v {
                    "id" => KeyName::Id,
                    "method" => KeyName::Method,
                    "params" => KeyName::Params,
                    "result" => KeyName::Result,
                    "error" => KeyName::Error,
                    _ => KeyName::Other,
                })
            }
        }
        d.deserialize_identifier(K)
    }
}

/// Best effort: finds a top-level `"id"` in the head or tail of a message too
/// large to parse. The head is scanned with exact nesting; in the tail only an
/// `"id":<value>}` that closes the message counts, which is top-level by
/// construction.
pub fn recover_id(head: &[u8], tail: &[u8]) -> Option<Id> {
    scan_head_for_id(head).or_else(|| scan_tail_for_id(tail))
}

fn scan_head_for_id(head: &[u8]) -> Option<Id> {
    let mut depth = 0usize;
    let mut i = 0;
    let mut expect_key = false;
    while i < head.len() {
        match head[i] {
            b'{' => {
                depth += 1;
                expect_key = depth == 1;
            }
            b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => expect_key = true,
            b'"' => {
                let end = string_end(head, i)?;
                if depth == 1 && expect_key {
                    let key = &head[i + 1..end];
                    let mut j = end + 1;
                    while j < head.len() && (head[j] == b':' || head[j].is_ascii_whitespace()) {
                        j += 1;
                    }
                    if key == b"id" {
                        return value_at(&head[j..]);
                    }
                    expect_key = false;
                    i = j;
                    continue;
                }
                i = end + 1;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Index of the quote closing the string that opens at `start`.
fn string_end(s: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Parses a scalar JSON value (string or number) at the start of `s`.
/// The id value at the start of a message's head. A number that runs to the
/// end of the head may have been cut there (`12` of `12345`): not an id.
fn value_at(s: &[u8]) -> Option<Id> {
    let (id, len) = value_len_at(s)?;
    (s.first() == Some(&b'"') || len < s.len()).then_some(id)
}

/// Like `value_at`, also returning how many bytes the value spans.
fn value_len_at(s: &[u8]) -> Option<(Id, usize)> {
    let end = match s.first()? {
        b'"' => string_end(s, 0)? + 1,
        _ => s
            .iter()
            .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
            .unwrap_or(s.len()),
    };
    let raw: &RawValue = serde_json::from_slice(&s[..end]).ok()?;
    Some((Id::from_raw(raw), end))
}

fn scan_tail_for_id(tail: &[u8]) -> Option<Id> {
    let t = tail.trim_ascii_end();
    let body = t.strip_suffix(b"}")?.trim_ascii_end();
    let pos = memchr::memmem::rfind(body, b"\"id\"")?;
    // A member name starts after `{` or `,`: not inside another name or a
    // string (`"m\"id"` ends in `\"id"` too).
    if !matches!(body[..pos].trim_ascii_end().last(), Some(b'{' | b',')) {
        return None;
    }
    let mut rest = body[pos + 4..].trim_ascii_start();
    rest = rest.strip_prefix(b":")?.trim_ascii_start();
    let (id, len) = value_len_at(rest)?;
    // The value must run to the message's closing brace: nothing after it.
    rest[len..]
        .iter()
        .all(u8::is_ascii_whitespace)
        .then_some(id)
}

/// Serialises a JSON-RPC error response to `id` (`null` when unknown).
pub fn error_response(
    id: Option<&Id>,
    code: i64,
    message: &str,
    data: serde_json::Value,
) -> Vec<u8> {
    let id = id.map_or_else(|| "null".to_string(), Id::to_json);
    error_response_spelled(&id, code, message, data)
}

/// Like `error_response`, with the id given as JSON text (as its sender
/// spelled it).
pub fn error_response_spelled(
    id: &str,
    code: i64,
    message: &str,
    data: serde_json::Value,
) -> Vec<u8> {
    let body = serde_json::json!({"code": code, "message": message, "data": data});
    format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"error\":{body}}}").into_bytes()
}

/// `notifications/cancelled` for `id`, as MCP defines it.
pub fn cancelled(id: &Id, reason: &str) -> Vec<u8> {
    cancelled_spelled(&id.to_json(), reason)
}

/// Like `cancelled`, with the id given as JSON text (as the request that
/// is cancelled spelled it).
pub fn cancelled_spelled(id: &str, reason: &str) -> Vec<u8> {
    let reason = serde_json::Value::String(reason.to_string());
    format!(
        "{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{{\"requestId\":{id},\"reason\":{reason}}}}}"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(s: &str) -> Envelope<'_> {
        match peek(s.as_bytes()).expect("valid") {
            Message::Single(e) => e,
            Message::Batch(_) => panic!("batch"),
        }
    }

    #[test]
    fn a_cloned_id_is_the_same_variant_and_text() {
        // The hand-written `Clone` (out of line, for size) keeps each
        // variant and its text.
        for id in [
            Id::Num(-7),
            Id::Str("a\u{e9}".into()),
            Id::Other("1.5e0".into()),
            Id::Other("null".into()),
            Id::Str("".into()),
        ] {
            let c = id.clone();
            assert_eq!(c, id);
            assert_eq!(format!("{c:?}"), format!("{id:?}"));
            assert_eq!(c.to_json(), id.to_json());
        }
    }

    #[test]
    fn recovered_ids_are_never_cut_or_taken_from_inside_a_string() {
        // A number cut by the end of the head is not the id (the message's
        // id is 12345).
        assert_eq!(recover_id(b"{\"id\":12", b""), None);
        assert_eq!(recover_id(b"{\"id\":-0.49e2", b""), None);
        assert_eq!(recover_id(b"{\"id\":12,\"m", b""), Some(Id::Num(12)));
        assert_eq!(
            recover_id(b"{\"id\":\"ab\"", b""),
            Some(Id::Str("ab".into()))
        );
        // A tail whose last `"id"` is the end of another (escaped) name.
        let tail = br#"{"jsonrpc": "..0","id": "psa1","m\"id": "psing"}"#;
        assert_eq!(recover_id(b"", tail), None);
        assert_eq!(
            recover_id(b"", br#"...,"id": "psa1"}"#),
            Some(Id::Str("psa1".into()))
        );
    }

    #[test]
    fn shapes_with_a_wrong_method_or_id_type_are_invalid() {
        let kind = |text: &str| match peek(text.as_bytes()) {
            Ok(Message::Single(env)) => env.kind(),
            _ => panic!("{text}: not one message"),
        };
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":1,"method":"a"}"#),
            Kind::Request
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":"x","method":"a"}"#),
            Kind::Request
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":-1.5e3,"method":"a"}"#),
            Kind::Request
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","method":"a"}"#),
            Kind::Notification
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            Kind::Response
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":null,"error":{}}"#),
            Kind::Response
        );
        for bad in [
            r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            r#"{"jsonrpc":"2.0","method":null}"#,
            r#"{"jsonrpc":"2.0","method":["a"]}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"a"}"#,
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"a"}"#,
            r#"{"jsonrpc":"2.0","id":[1],"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":true,"method":"a"}"#,
        ] {
            assert_eq!(kind(bad), Kind::Invalid, "{bad}");
        }
    }

    #[test]
    fn numeric_ids_match_by_value_and_keep_their_spelling_known() {
        let id = |t: &str| Id::from_raw(serde_json::from_str::<&RawValue>(t).expect("json"));
        for (a, b) in [
            ("1", "1e0"),
            ("1", "1.0"),
            ("1", "10e-1"),
            ("0", "-0"),
            ("0", "-0.0"),
            ("1.5", "1.50"),
            ("1.5", "15e-1"),
            ("18446744073709551616", "1.8446744073709552e19"),
            ("-9223372036854775808", "-9.223372036854775808e18"),
        ] {
            assert_eq!(id(a), id(b), "{a} vs {b}");
        }
        assert_eq!(id("1e0"), Id::Num(1));
        assert_ne!(id("1"), id("2"));
        assert_ne!(id("1"), id("\"1\""));
        assert_ne!(id("1.5"), id("2.5"));
        // Beyond f64: kept as written.
        assert_eq!(id("1e400"), Id::Other("1e400".into()));
        assert_eq!(id("null"), Id::Other("null".into()));
        // Every id survives its own text.
        for t in ["1e0", "-0", "1.50", "18446744073709551616", "7", "\"x\""] {
            let i = id(t);
            assert_eq!(id(&i.to_json()), i, "{t}");
        }
        assert_eq!(
            Id::from_value(&serde_json::json!(1.0)),
            Id::Num(1),
            "from_value agrees"
        );
        assert!(Id::Num(7).is_spelled("7"));
        assert!(Id::Num(-7).is_spelled("-7"));
        assert!(!Id::Num(0).is_spelled("-0"));
        assert!(!Id::Num(1).is_spelled("1e0"));
        assert!(Id::Str("ab".into()).is_spelled("\"ab\""));
        assert!(!Id::Str("ab".into()).is_spelled("\"a\\u0062\""));
    }

    #[test]
    fn notification_methods_with_an_id_are_invalid() {
        let kind = |text: &str| match peek(text.as_bytes()) {
            Ok(Message::Single(env)) => env.kind(),
            _ => panic!("{text}"),
        };
        assert_eq!(
            kind(
                r#"{"jsonrpc":"2.0","id":7,"method":"notifications/cancelled","params":{"requestId":1}}"#
            ),
            Kind::Invalid
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":7,"method":"notifications\/message"}"#),
            Kind::Invalid
        );
        assert_eq!(
            kind(
                r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#
            ),
            Kind::Notification
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":7,"method":"notificationsX"}"#),
            Kind::Request
        );
    }

    #[test]
    fn batch_items_nested_arrays_and_scalars_are_no_messages() {
        let Ok(Message::Batch(items)) =
            peek(br#"[{"id":1,"result":{}},[{"id":2,"result":{}},{"id":3,"method":"m"},[{"id":4,"result":1}]],5,[]]"#)
        else {
            panic!("batch");
        };
        assert!(matches!(batch_item(items[0]), BatchItem::Msg(e) if e.kind() == Kind::Response));
        assert!(matches!(batch_item(items[1]), BatchItem::Nested(ref ids) if ids == &[Id::Num(2)]));
        assert!(matches!(batch_item(items[2]), BatchItem::Invalid));
        assert!(matches!(batch_item(items[3]), BatchItem::Nested(ref ids) if ids.is_empty()));
    }

    #[test]
    fn classifies_messages() {
        let r =
            single(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"x":[1,{"id":9}]}}"#);
        assert_eq!(r.kind(), Kind::Request);
        assert_eq!(r.id(), Some(Id::Num(1)));
        assert!(r.method_is("tools/call"));
        let n = single(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert_eq!(n.kind(), Kind::Notification);
        let resp = single(r#"{"jsonrpc":"2.0","id":"a\u0062","result":{}}"#);
        assert_eq!(resp.kind(), Kind::Response);
        assert_eq!(resp.id(), Some(Id::Str("ab".into())));
        let err = single(r#"{"id":2,"error":{"code":1,"message":"x"}}"#);
        assert_eq!(err.kind(), Kind::Response);
        assert_eq!(single(r#"{"id":2}"#).kind(), Kind::Invalid);
        assert!(peek(b"{\"id\":1,").is_err());
        assert!(peek(b"42").is_err());
        assert!(matches!(peek(b" [{\"id\":1},{\"id\":2}]"), Ok(Message::Batch(v)) if v.len() == 2));
    }

    #[test]
    fn reads_progress_tokens_and_cancelled_ids() {
        let r = single(r#"{"id":1,"method":"m","params":{"_meta":{"progressToken":"tok"}}}"#);
        assert_eq!(r.progress_token(), Some(Id::Str("tok".into())));
        let p = single(
            r#"{"method":"notifications/progress","params":{"progressToken":5,"progress":1}}"#,
        );
        assert_eq!(p.param_id("progressToken"), Some(Id::Num(5)));
        let c = single(r#"{"method":"notifications/cancelled","params":{"requestId":"r1"}}"#);
        assert_eq!(c.param_id("requestId"), Some(Id::Str("r1".into())));
        assert_eq!(
            single(r#"{"id":1,"method":"m","params":{}}"#).progress_token(),
            None
        );
    }

    #[test]
    fn recovers_ids_of_oversized_messages() {
        let head = br#"{"jsonrpc":"2.0","params":{"id":99,"text":"aaaa"#;
        assert_eq!(recover_id(head, b"aaaa\"}}"), None);
        let head = br#"{"jsonrpc":"2.0","id":"big-1","method":"tools/call","params":{"t":"aaa"#;
        assert_eq!(recover_id(head, b""), Some(Id::Str("big-1".into())));
        let tail = br#"aaaa"}},"id":42}"#;
        assert_eq!(
            recover_id(br#"{"jsonrpc":"2.0","params":{"t":"aaa"#, tail),
            Some(Id::Num(42))
        );
        // A nested "id" at the end of the tail is not the message's id.
        let tail = br#"aaaa","id":42}}"#;
        assert_eq!(recover_id(br#"{"params":{"t":"aaa"#, tail), None);
    }

    #[test]
    fn builds_errors_and_cancellations() {
        let e = error_response(
            Some(&Id::Str("x\"y".into())),
            -32001,
            "timed out",
            serde_json::json!({"kind":"response_timeout"}),
        );
        let v: serde_json::Value = serde_json::from_slice(&e).unwrap();
        assert_eq!(v["id"], "x\"y");
        assert_eq!(v["error"]["code"], -32001);
        assert_eq!(v["error"]["data"]["kind"], "response_timeout");
        let c = cancelled(&Id::Num(7), "timeout");
        let v: serde_json::Value = serde_json::from_slice(&c).unwrap();
        assert_eq!(v["params"]["requestId"], 7);
        assert_eq!(v["method"], "notifications/cancelled");
        let null = error_response(None, -32700, "Parse error", serde_json::Value::Null);
        assert!(String::from_utf8(null).unwrap().contains("\"id\":null"));
    }
}
