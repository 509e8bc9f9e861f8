//! The members the relay reads are written once. JSON leaves what a
//! duplicated name means to the reader (RFC 8259 §4: names SHOULD be
//! unique), and readers differ: serde_json, Python and JavaScript keep the
//! last, others (cJSON, simdjson's field lookup) the first. A message whose
//! `id` the relay rewrote in its last spelling while the server reads the
//! first would reach the server with an id from outside the session's
//! namespace, one that may be another session's upstream id; a `name` the
//! tool filter allowed in one spelling could be called in the other. So a
//! message from a client with a duplicated member among those the relay
//! reads is not one the relay passes: `jsonrpc::peek` marks it
//! (`Envelope::ambiguous`, naming the member) and the fronts and the shared
//! mux refuse it (Invalid Request). A server's message is read as before,
//! the last of duplicates winning: the relay routes it, and a client reads
//! only what the relay gave it.
//!
//! The members: at the top, `id`, `method`, `params` and `result`; in an
//! object `params`, `name`, `uri`, `requestState`, `requestId` and
//! `_meta`; in an object `params._meta`, `progressToken`. Names compare
//! decoded (`"n\u0061me"` is `name`; a lone surrogate, which names none of
//! them, is no obstacle). The relay's scan (`proto::scan`) leaves any such
//! message to serde_json, whose reading marks it with what is here.

use super::scan;

/// `params`' members the relay reads, and how a duplicate is named.
const PARAMS: [(&str, &str); 5] = [
    ("name", "params.name"),
    ("uri", "params.uri"),
    ("requestState", "params.requestState"),
    ("requestId", "params.requestId"),
    ("_meta", "params._meta"),
];
/// `params._meta`'s.
const META: [(&str, &str); 1] = [("progressToken", "params._meta.progressToken")];

/// The member of `params` (the text of any JSON value, already validated)
/// the relay reads that is written twice, if one is: in an object
/// `params`, or in its object `_meta`.
pub fn ambiguous_params(params: &str) -> Option<&'static str> {
    twice(params, &PARAMS)
}

/// `text`, if it is an object: the first of `names` written in it twice
/// (within `params`, its `_meta`'s as well), read with the relay's own
/// scan. A name with escapes is decoded (one with a lone surrogate names
/// none of them). Text the scan cannot read (nesting past its depth,
/// which serde_json's reading refused already) is taken as ambiguous.
fn twice(text: &str, names: &'static [(&'static str, &'static str)]) -> Option<&'static str> {
    let b = text.as_bytes();
    let start = scan::ws(b, 0);
    if b.get(start) != Some(&b'{') {
        return None;
    }
    let mut seen = [false; PARAMS.len()];
    let mut found = None;
    let read = scan::members(text, start, |key, escaped, at| {
        let end = scan::value_end(b, at)?;
        let decoded;
        let name = if escaped {
            let quoted = format!("\"{}\"", std::str::from_utf8(key).ok()?);
            decoded = serde_json::from_str::<String>(&quoted).unwrap_or_default();
            decoded.as_bytes()
        } else {
            key
        };
        let Some(i) = names.iter().position(|(n, _)| n.as_bytes() == name) else {
            return Some(end);
        };
        if std::mem::replace(seen.get_mut(i)?, true) {
            found = found.or(names.get(i).map(|(_, path)| *path));
        }
        if name == b"_meta" {
            found = found.or_else(|| twice(text.get(at..end)?, &META));
        }
        Some(end)
    });
    match read {
        Some(_) => found,
        None => names.first().map(|(_, path)| *path),
    }
}

#[cfg(test)]
mod tests {
    use crate::proto::jsonrpc::{self, Message};
    use crate::proto::scan;

    fn marked(text: &str) -> Option<&'static str> {
        match jsonrpc::peek(text.as_bytes()) {
            Ok(Message::Single(env)) => env.ambiguous,
            other => panic!("{text}: {:?}", other.err()),
        }
    }

    /// Each message writes a member the relay reads twice, plainly or with
    /// an escape: the scan leaves it to serde_json, whose reading marks it,
    /// naming the member.
    #[test]
    fn a_duplicated_member_the_relay_reads_is_marked() {
        let cases = [
            (r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"m"}"#, "id"),
            (r#"{"jsonrpc":"2.0","id":1,"\u0069d":2,"method":"m"}"#, "id"),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"a","method":"b"}"#,
                "method",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{},"params":{}}"#,
                "params",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{},"result":{}}"#,
                "result",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ok","arguments":{},"name":"forbidden"}}"#,
                "params.name",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ok","n\u0061me":"forbidden"}}"#,
                "params.name",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","uri":"b"}}"#,
                "params.uri",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"requestState":"a","requestState":"b"}}"#,
                "params.requestState",
            ),
            (
                r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3,"requestId":"a"}}"#,
                "params.requestId",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":{},"_meta":{"progressToken":1}}}"#,
                "params._meta",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":{"progressToken":1,"progressToken":2}}}"#,
                "params._meta.progressToken",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":{"progressToken":1,"progress\u0054oken":2}}}"#,
                "params._meta.progressToken",
            ),
            // A name with a lone surrogate hides nothing.
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"name":"a","x\ud800":1,"name":"b"}}"#,
                "params.name",
            ),
        ];
        for (text, member) in cases {
            assert!(scan::envelope(text).is_none(), "the scan took {text}");
            assert_eq!(marked(text), Some(member), "{text}");
        }
    }

    /// Duplicates of members the relay does not read are the server's to
    /// read as it does; values are skipped, so any number JSON allows
    /// passes; a name with a lone surrogate passes; the same members once
    /// each pass the fast way.
    #[test]
    fn everything_else_is_not_marked() {
        let slow = [
            r#"{"jsonrpc":"2.0","jsonrpc":"2.0","id":1,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{},"error":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"arguments":{},"arguments":{"a":1e999}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":1e999,"x\u0041":[1,2]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":{"a":1,"a":2,"progressToken":"t"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","x\ud800":1}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"m","params":[1,1]}"#,
        ];
        for text in slow {
            assert_eq!(marked(text), None, "{text}");
        }
        let fast = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","uri":"u","requestState":"s","requestId":1,"arguments":{"name":"inner","name":"again"},"_meta":{"progressToken":1,"io.modelcontextprotocol/x":{"progressToken":2,"progressToken":3}}}}"#;
        let env = scan::envelope(fast).expect("once each: the fast way");
        assert_eq!(env.ambiguous, None);
        assert_eq!(env.params_spans.expect("spans").name, Some("\"echo\""));
    }
}
