//! The members the relay reads are written once. JSON leaves what a
//! duplicated name means to the reader (RFC 8259 §4: names SHOULD be
//! unique), and readers differ: serde_json, Python and JavaScript keep the
//! last, others (cJSON, simdjson's field lookup) the first. A message whose
//! `id` the relay rewrote in its last spelling while the server reads the
//! first would reach the server with an id from outside the session's
//! namespace, one that may be another session's upstream id; a `name` the
//! tool filter allowed in one spelling could be called in the other. So a
//! message with a duplicated member among those the relay reads is not a
//! message the relay passes: `jsonrpc::peek` refuses it.
//!
//! The members: at the top, `id`, `method`, `params` and `result`; in an
//! object `params`, `name`, `uri`, `requestState`, `requestId` and
//! `_meta`; in an object `params._meta`, `progressToken`. Names compare
//! decoded (`"n\u0061me"` is `name`). The relay's scan (`proto::scan`)
//! leaves any such message to serde_json, whose reading is here.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::errors::RelayError;
use super::jsonrpc::{Id, Raw};

/// `params`' members the relay reads.
const PARAMS: [&str; 5] = ["name", "uri", "requestState", "requestId", "_meta"];
/// `params._meta`'s.
const META: [&str; 1] = ["progressToken"];

/// The error of a duplicated member `what`.
pub fn duplicate<E: de::Error>(what: &str) -> E {
    E::custom(format_args!("duplicate member `{what}`"))
}

/// Checks the text of `params` (any JSON value): an object whose members
/// the relay reads are written once each, its `_meta`'s as well.
pub fn check_params(params: &str) -> Result<(), serde_json::Error> {
    check_object(params, &PARAMS, "params")
}

/// `text`, if it is an object: each of `names` in it at most once (and,
/// within `params`, its `_meta`'s). Values are skipped, not read: any
/// number JSON allows passes.
fn check_object(text: &str, names: &[&str], within: &str) -> Result<(), serde_json::Error> {
    if !text.trim_start().starts_with('{') {
        return Ok(());
    }
    let mut de = serde_json::Deserializer::from_str(text);
    Once { names, within }.deserialize(&mut de)
}

/// Visits an object: each of `names` at most once; `_meta`'s value, when
/// `within` is `params`, checked as `params._meta`.
struct Once<'n> {
    names: &'n [&'n str],
    within: &'n str,
}

impl<'de> DeserializeSeed<'de> for Once<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Once<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = [false; PARAMS.len()];
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            let found = self.names.iter().position(|n| *n == name);
            let Some(slot) = found.and_then(|i| seen.get_mut(i)) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if std::mem::replace(slot, true) {
                return Err(duplicate(&format!("{}.{name}", self.within)));
            }
            if self.within == "params" && name == "_meta" {
                let meta = map.next_value::<&'de RawValue>()?;
                check_object(meta.get(), &META, "params._meta").map_err(de::Error::custom)?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// What to answer a message `jsonrpc::peek` refused. Valid JSON that is
/// no message the relay passes (a member it reads written twice, no
/// object) is an Invalid Request, answered with its id when it has exactly
/// one, so the request still gets its one answer; anything else is a
/// Parse error, answered with a null id (JSON-RPC 2.0 §5.1).
pub fn refusal(bytes: &[u8]) -> (Option<Id>, RelayError) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return (None, RelayError::ParseError);
    };
    if serde_json::from_str::<IgnoredAny>(text).is_err() {
        return (None, RelayError::ParseError);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let id = SoleId.deserialize(&mut de).ok().flatten();
    (id.map(Id::from_raw), RelayError::InvalidRequest)
}

/// The top-level `id` of an object, when it is written exactly once.
struct SoleId;

impl<'de> DeserializeSeed<'de> for SoleId {
    type Value = Option<Raw<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SoleId {
    type Value = Option<Raw<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut id, mut count) = (None, 0);
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            if name == "id" {
                count += 1;
                id = Some(Raw::from(map.next_value::<&'de RawValue>()?));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(id.filter(|_| count == 1))
    }
}

#[cfg(test)]
mod tests {
    use crate::proto::jsonrpc::{self, Message};
    use crate::proto::scan;

    /// Each message writes a member the relay reads twice, plainly or with
    /// an escape: the scan leaves it to serde_json, and `peek` refuses it,
    /// naming the member.
    #[test]
    fn a_duplicated_member_the_relay_reads_is_refused() {
        let cases = [
            (r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"m"}"#, "`id`"),
            (
                r#"{"jsonrpc":"2.0","id":1,"\u0069d":2,"method":"m"}"#,
                "`id`",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"a","method":"b"}"#,
                "`method`",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{},"params":{}}"#,
                "`params`",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{},"result":{}}"#,
                "`result`",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ok","arguments":{},"name":"forbidden"}}"#,
                "`params.name`",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ok","n\u0061me":"forbidden"}}"#,
                "`params.name`",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","uri":"b"}}"#,
                "`params.uri`",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"requestState":"a","requestState":"b"}}"#,
                "`params.requestState`",
            ),
            (
                r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3,"requestId":"a"}}"#,
                "`params.requestId`",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":{},"_meta":{"progressToken":1}}}"#,
                "`params._meta`",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":{"progressToken":1,"progressToken":2}}}"#,
                "`params._meta.progressToken`",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":{"progressToken":1,"progress\u0054oken":2}}}"#,
                "`params._meta.progressToken`",
            ),
        ];
        for (text, member) in cases {
            assert!(scan::envelope(text).is_none(), "the scan took {text}");
            match jsonrpc::peek(text.as_bytes()) {
                Err(e) => assert!(
                    e.to_string()
                        .contains(&format!("duplicate member {member}")),
                    "{text}: {e}"
                ),
                Ok(_) => panic!("peek took {text}"),
            }
        }
    }

    /// Duplicates of members the relay does not read are the server's to
    /// read as it does; values are skipped, so any number JSON allows
    /// passes; the same members once each pass the fast way.
    #[test]
    fn everything_else_passes() {
        let slow = [
            r#"{"jsonrpc":"2.0","jsonrpc":"2.0","id":1,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{},"error":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"arguments":{},"arguments":{"a":1e999}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":1e999,"x\u0041":[1,2]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":{"a":1,"a":2,"progressToken":"t"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"m","params":[1,1]}"#,
        ];
        for text in slow {
            assert!(
                matches!(jsonrpc::peek(text.as_bytes()), Ok(Message::Single(_))),
                "{text}"
            );
        }
        let fast = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","uri":"u","requestState":"s","requestId":1,"arguments":{"name":"inner","name":"again"},"_meta":{"progressToken":1,"io.modelcontextprotocol/x":{"progressToken":2,"progressToken":3}}}}"#;
        let env = scan::envelope(fast).expect("once each: the fast way");
        let spans = env.params_spans.expect("spans");
        assert_eq!(spans.name, Some("\"echo\""));
        assert!(jsonrpc::peek(fast.as_bytes()).is_ok());
    }
}
