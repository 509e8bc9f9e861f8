//! The per-request log opt-in of the modern era.
//!
//! A 2026-07-28 request asks for the server's `notifications/message` by
//! carrying `_meta["io.modelcontextprotocol/logLevel"]`: that level and the
//! more severe ones are sent for it, nothing else; without the key (or with
//! a value that is no level) no log is sent for it. A handshake-era server
//! knows nothing of this and sends what it sends, so the relay filters in
//! its place: [`opted_in`] reads what a request asked for, [`deliver`] says
//! whether one log message reaches it.

use serde_json::value::RawValue;

/// The `_meta` key of the opt-in.
pub const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";

/// The log levels, least severe first (RFC 5424's scale, as MCP uses it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Notice,
    Warning,
    Error,
    Critical,
    Alert,
    Emergency,
}

impl Level {
    /// The level named `s`; `None` for anything else (case matters).
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "debug" => Level::Debug,
            "info" => Level::Info,
            "notice" => Level::Notice,
            "warning" => Level::Warning,
            "error" => Level::Error,
            "critical" => Level::Critical,
            "alert" => Level::Alert,
            "emergency" => Level::Emergency,
            _ => return None,
        })
    }
}

/// The least severe level a request opted in to, from its `params._meta`
/// text; `None`: no log for it. The text is read only when it names the
/// key.
pub fn opted_in(meta: Option<&RawValue>) -> Option<Level> {
    let meta = meta?;
    memchr::memmem::find(meta.get().as_bytes(), b"logLevel")?;
    let v = crate::mcp::shared::member(meta, META_LOG_LEVEL)?;
    let s: String = serde_json::from_str(v.get()).ok()?;
    Level::parse(&s)
}

/// The level named by the value `v` (a JSON string's text), as found in
/// `_meta` by the caller.
pub fn parse_raw(v: &RawValue) -> Option<Level> {
    parse_text(v.get())
}

/// [`parse_raw`] of a value's JSON text.
pub fn parse_text(v: &str) -> Option<Level> {
    let s: &str = serde_json::from_str(v).ok()?;
    Level::parse(s)
}

/// [`opted_in`] from a parsed `_meta` value.
pub fn opted_in_value(meta: Option<&serde_json::Value>) -> Option<Level> {
    Level::parse(meta?.get(META_LOG_LEVEL)?.as_str()?)
}

/// A request's opt-in from the log level its envelope carried (as the
/// envelope reader found it): a value that names no level is no opt-in.
pub fn opt_in(meta_level: Option<&str>) -> Option<Level> {
    meta_level.and_then(Level::parse)
}

/// The `level` a `notifications/message` names in its `params`, as text
/// (for [`deliver`]).
pub fn message_level(params: Option<&serde_json::Value>) -> Option<&str> {
    params?.get("level")?.as_str()
}

/// Whether a `notifications/message` whose `params.level` is `level`
/// reaches a request that opted in at `min`. A message with no level or an
/// unknown one is not delivered to a request that did not ask for debug
/// (it cannot be placed above the threshold).
pub fn deliver(min: Option<Level>, level: Option<&str>) -> bool {
    let Some(min) = min else { return false };
    match level.and_then(Level::parse) {
        Some(l) => l >= min,
        None => min == Level::Debug,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    fn the_opt_in_is_read_from_meta() {
        let m = raw(r#"{"io.modelcontextprotocol/logLevel":"warning","progressToken":1}"#);
        assert_eq!(opted_in(Some(&m)), Some(Level::Warning));
        assert_eq!(opted_in(Some(&raw(r#"{"progressToken":1}"#))), None);
        assert_eq!(
            opted_in(Some(&raw(r#"{"io.modelcontextprotocol/logLevel":"loud"}"#))),
            None
        );
        assert_eq!(
            opted_in(Some(&raw(r#"{"io.modelcontextprotocol/logLevel":3}"#))),
            None
        );
        assert_eq!(
            opted_in(Some(&raw(r#"{"other":{"logLevel":"debug"}}"#))),
            None
        );
        assert_eq!(opted_in(None), None);
        assert_eq!(parse_raw(&raw(r#""notice""#)), Some(Level::Notice));
        assert_eq!(parse_raw(&raw("7")), None);
        let v = serde_json::json!({"io.modelcontextprotocol/logLevel": "debug"});
        assert_eq!(opted_in_value(Some(&v)), Some(Level::Debug));
        assert_eq!(opted_in_value(None), None);
        assert_eq!(opt_in(Some("error")), Some(Level::Error));
        assert_eq!(opt_in(Some("verbose")), None);
        assert_eq!(opt_in(None), None);
        let params = serde_json::json!({"level": "error", "data": "x"});
        assert_eq!(message_level(Some(&params)), Some("error"));
        assert_eq!(message_level(Some(&serde_json::json!({"level": 3}))), None);
        assert_eq!(message_level(None), None);
    }

    #[test]
    fn only_the_level_asked_for_and_above_is_delivered() {
        assert!(!deliver(None, Some("emergency")));
        assert!(deliver(Some(Level::Info), Some("info")));
        assert!(deliver(Some(Level::Info), Some("error")));
        assert!(!deliver(Some(Level::Info), Some("debug")));
        assert!(!deliver(Some(Level::Error), Some("warning")));
        assert!(!deliver(Some(Level::Info), Some("INFO")));
        assert!(!deliver(Some(Level::Info), None));
        assert!(deliver(Some(Level::Debug), None));
        let all = [
            "debug",
            "info",
            "notice",
            "warning",
            "error",
            "critical",
            "alert",
            "emergency",
        ];
        for (i, a) in all.iter().enumerate() {
            for (j, b) in all.iter().enumerate() {
                assert_eq!(deliver(Level::parse(a), Some(b)), j >= i, "{a} {b}");
            }
        }
    }
}
