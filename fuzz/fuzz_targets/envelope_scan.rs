//! The relay's own scan of a message (`proto::scan::envelope`), the fast
//! path of `jsonrpc::peek`, held to serde_json, which reads everything the
//! scan leaves to it and is the reference here.
//!
//! Checks, on any text (and wrapped as `{"params":<input>}` and as
//! `{"id":1,"result":<input>}`, so values of every kind are reached): what
//! the scan accepts, serde_json accepts, with the same `id`, `method`,
//! `params` and `result` (exact texts, borrowed from the input at the same
//! place) and the same `is_response`; `params`' members recorded on the
//! way (`ParamSpans`) are the ones `shared::scan_params` finds, recorded
//! whenever `params` is an object without escaped names, and the era
//! bridge's `_meta` strip made from them is the one it makes without them;
//! a method said plain is its text unquoted; a result said unstamped has
//! none of the members the bridge writes, and stamping it unsearched gives
//! valid JSON, the searched stamp where that one applies;
//! the skip of a value alone
//! (`scan::value_end`) ends where serde_json's `RawValue` of it ends; a
//! message is marked ambiguous (`proto::unique`) exactly when a reference
//! reading of its names finds a member the relay reads written twice; and
//! no panic on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_relay::mcp::era::stamp::{self, StripEdit};
use mcp_relay::mcp::shared::{param_scan, scan_params};
use mcp_relay::proto::jsonrpc::{self, Envelope};
use mcp_relay::proto::scan;
use serde_json::value::RawValue;

fn spans<'a>(e: &Envelope<'a>) -> [Option<(usize, &'a str)>; 4] {
    [e.id, e.method, e.params, e.result].map(|r| r.map(|r| (r.get().as_ptr().addr(), r.get())))
}

/// Whether any member name of an object is written with escapes: serde_json
/// lends a name without escapes from the input, and decodes the others.
struct EscapedNames(bool);

impl<'de> serde::Deserialize<'de> for EscapedNames {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name(bool);
        impl<'de> serde::Deserialize<'de> for Name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = Name;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a name")
                    }
                    fn visit_borrowed_str<E>(self, _: &'de str) -> Result<Name, E> {
                        Ok(Name(false))
                    }
                    fn visit_str<E>(self, _: &str) -> Result<Name, E> {
                        Ok(Name(true))
                    }
                }
                d.deserialize_str(V)
            }
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = EscapedNames;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<EscapedNames, A::Error> {
                let mut escaped = false;
                while let Some(Name(e)) = map.next_key::<Name>()? {
                    escaped |= e;
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
                Ok(EscapedNames(escaped))
            }
        }
        d.deserialize_map(V)
    }
}

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

fn check(text: &str) {
    let Some(fast) = scan::envelope(text) else {
        return;
    };
    let slow = match jsonrpc::serde_envelope(text) {
        Ok(e) => e,
        Err(e) => panic!("the scan accepts what serde_json refuses ({e}): {text:?}"),
    };
    assert_eq!(spans(&fast), spans(&slow), "members of {text:?}");
    assert_eq!(fast.is_response, slow.is_response, "is_response of {text:?}");
    // A plain method's name is its text between the quotes, as decoded.
    if fast.method_plain {
        let m = fast.method.expect("plain method without method").get();
        let decoded: String = serde_json::from_str(m).expect("plain method is a string");
        assert_eq!(Some(decoded.as_str()), m.get(1..m.len() - 1), "method of {text:?}");
    }
    // A result said to carry none of the stamped members carries none, by
    // any spelling; the stamp made without searching is the searched one.
    if fast.result_unstamped {
        let r = fast.result.expect("unstamped without result");
        // Values skipped as the relay skips them (a `Value` would refuse
        // numbers beyond f64 that JSON allows).
        let map: std::collections::BTreeMap<String, serde::de::IgnoredAny> =
            serde_json::from_str(r.get()).expect("unstamped result is an object");
        for k in ["resultType", "ttlMs", "cacheScope"] {
            assert!(!map.contains_key(k), "{k} in the result of {text:?}");
        }
        let searched = stamp::modern_result(r, false);
        let known = stamp::modern_result(r, true).expect("stamp of a checked object");
        if let Some(s) = searched {
            assert_eq!(s, known, "stamp of {text:?}");
        }
        // The edit is the result's opening brace, in place.
        let (brace, head) = known;
        assert!(brace == "{" && brace.as_ptr() == r.get().as_ptr(), "{text:?}");
        let whole = format!("{head}{}", &r.get()[1..]);
        let stamped: std::collections::BTreeMap<String, serde::de::IgnoredAny> =
            serde_json::from_str(&whole).expect("stamped result is JSON");
        assert!(stamped.contains_key("resultType"), "stamp of {text:?}");
    }
    // `params`' members recorded on the way are the ones `scan_params`
    // finds in its text (itself held to the parser by `params_scan`).
    if let Some(rec) = fast.params_spans {
        let params = fast.params.expect("spans without params").get();
        let scan = scan_params(params).expect("spans of a params that is no object");
        assert_eq!(
            [rec.name, rec.uri, rec.request_state, rec.meta],
            [scan.name, scan.uri, scan.request_state, scan.meta.as_ref().map(|m| m.text)],
            "params members of {text:?}"
        );
        // The bridge's strip made from what the scan recorded (a `_meta` of
        // reserved members only is stripped whole) is the one it makes
        // looking `_meta` up itself.
        let recorded = param_scan(&fast).expect("recorded params");
        assert_eq!(
            edit(stamp::strip_edit_with(fast.params, Some(recorded.meta.as_ref()))),
            edit(stamp::strip_edit(fast.params)),
            "strip edit of {text:?}"
        );
    } else if let Some(p) = fast.params {
        // Only a params with an escaped member name, or no object, is left.
        if let Ok(EscapedNames(escaped)) = serde_json::from_str::<EscapedNames>(p.get()) {
            assert!(escaped, "params members not recorded: {text:?}");
        }
    }
}

fn check_value(text: &str) {
    let b = text.as_bytes();
    let start = b
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        .unwrap_or(b.len());
    let Some(end) = scan::value_end(b, start) else {
        return;
    };
    // The value, then only whitespace: serde_json's RawValue of the whole
    // text is the same span. (Anything else after it: serde_json refuses.)
    let rest_is_ws = b[end..]
        .iter()
        .all(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'));
    match serde_json::from_str::<&RawValue>(text) {
        Ok(raw) => {
            assert!(rest_is_ws, "serde_json read more than the scan: {text:?}");
            assert_eq!(raw.get(), &text[start..end], "value span of {text:?}");
        }
        Err(e) => assert!(!rest_is_ws, "the scan accepts a value serde_json refuses ({e}): {text:?}"),
    }
}

/// Member names of the object `text` (if it is one), decoded as serde_json
/// decodes them; `None` when one cannot be (a lone surrogate).
fn names(text: &str) -> Option<Vec<(String, Box<RawValue>)>> {
    struct Names;
    impl<'de> serde::de::Visitor<'de> for Names {
        type Value = Vec<(String, Box<RawValue>)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(k) = m.next_key::<String>()? {
                out.push((k, m.next_value::<Box<RawValue>>()?));
            }
            Ok(out)
        }
    }
    impl<'de> serde::Deserialize<'de> for Wrap {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_map(Names).map(Wrap)
        }
    }
    struct Wrap(Vec<(String, Box<RawValue>)>);
    serde_json::from_str::<Wrap>(text).ok().map(|w| w.0)
}

/// A name among `wanted` written twice in the object `text`.
fn repeats(all: &[(String, Box<RawValue>)], wanted: &[&str]) -> bool {
    wanted
        .iter()
        .any(|w| all.iter().filter(|(k, _)| k == w).count() > 1)
}

/// `proto::unique`: a message serde_json reads is marked ambiguous exactly
/// when a member the relay reads is written twice, by this reference
/// reading of its names (skipped when a name cannot be decoded).
fn check_ambiguous(text: &str) {
    let Ok(env) = jsonrpc::serde_envelope(text) else {
        return;
    };
    let Some(top) = names(text) else {
        return;
    };
    let mut expected = repeats(&top, &["id", "method", "params", "result"]);
    if !expected && let Some(p) = env.params.filter(|p| p.get().starts_with('{')) {
        let Some(params) = names(p.get()) else {
            return;
        };
        expected = repeats(&params, &["name", "uri", "requestState", "requestId", "_meta"]);
        if !expected && let Some((_, meta)) = params.iter().find(|(k, _)| k == "_meta") {
            if meta.get().starts_with('{') {
                let Some(meta) = names(meta.get()) else {
                    return;
                };
                expected = repeats(&meta, &["progressToken"]);
            }
        }
    }
    assert_eq!(env.ambiguous.is_some(), expected, "ambiguous: {:?} for {text:?}", env.ambiguous);
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check(text);
    check_ambiguous(text);
    check_ambiguous(&format!("{{\"id\":1,\"method\":\"m\",\"params\":{text}}}"));
    check_value(text);
    check(&format!("{{\"params\":{text}}}"));
    check(&format!("{{\"id\":1,\"result\":{text}}}"));
});
