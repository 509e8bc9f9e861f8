//! The relay's own scan of a request's `params` (`shared::scan_params`,
//! issue 13): what a 2026-07-28 request's `Mcp-Name` is checked against and
//! what the era bridge strips and reads from `_meta`, found in the text
//! `peek` validated instead of parsing it again.
//!
//! Checks, on the `params` of any message `peek` accepts (the input as a
//! line, and wrapped as `{"params":<input>}`): the scan agrees with the
//! parser on `name`, `uri`, `requestState` and `_meta` (each value's exact text, names
//! unescaped, the last of duplicates winning, `None` for anything but an
//! object); `_meta`'s members, when the scan lists them, are the parser's
//! in order with their exact texts, and when it does not, `_meta` is no
//! object or has a name with escapes; every value is borrowed from the
//! message; the strip edit made from the scanned `_meta` is the one the
//! bridge makes looking `_meta` up itself. And no panic on any text at all,
//! valid or not.
#![no_main]

use std::fmt;

use libfuzzer_sys::fuzz_target;
use mcp_relay::mcp::era::stamp::{self, StripEdit};
use mcp_relay::mcp::shared::scan_params;
use mcp_relay::proto::jsonrpc::{self, Message};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// An object's members as the parser reads them: in order, duplicates
/// included, names unescaped, and whether any name had escapes.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    out.push((k, map.next_value::<&RawValue>()?));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn last<'a>(members: &[(String, &'a RawValue)], name: &str) -> Option<&'a str> {
    members
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.get())
}

fn within(whole: &[u8], part: &str) -> bool {
    let (w, p) = (whole.as_ptr().addr(), part.as_ptr().addr());
    p >= w && p + part.len() <= w + whole.len()
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

fn check(line: &[u8]) {
    let Ok(Message::Single(env)) = jsonrpc::peek(line) else {
        return;
    };
    let Some(params) = env.params else {
        return;
    };
    let text = params.get();
    let scan = scan_params(text);
    let parsed = serde_json::from_str::<Members>(text).ok();
    let (Some(scan), Some(Members(members))) = (&scan, &parsed) else {
        assert!(scan.is_none() && parsed.is_none(), "object or not: {text}");
        return;
    };
    assert_eq!(scan.name, last(members, "name"), "name in {text}");
    assert_eq!(scan.uri, last(members, "uri"), "uri in {text}");
    assert_eq!(scan.request_state, last(members, "requestState"), "requestState in {text}");
    assert_eq!(scan.meta.as_ref().map(|m| m.text), last(members, "_meta"), "_meta in {text}");
    let found = [scan.name, scan.uri, scan.request_state, scan.meta.as_ref().map(|m| m.text)];
    for v in found.into_iter().flatten() {
        assert!(within(line, v), "{v} is not borrowed from the line");
    }
    if let Some(meta) = &scan.meta {
        let inner = serde_json::from_str::<Members>(meta.text).ok();
        match (&meta.members, inner) {
            (Some(found), Some(Members(want))) => {
                assert_eq!(found.len(), want.len(), "_meta's members in {text}");
                for ((n, v), (wn, wv)) in found.iter().zip(&want) {
                    assert_eq!((*n, *v), (wn.as_str(), wv.get()), "_meta member in {text}");
                    assert!(within(line, v), "{v} is not borrowed from the line");
                }
            }
            (Some(_), None) => panic!("members listed for a _meta that is no object: {text}"),
            (None, Some(Members(_))) => assert!(
                meta.text.contains('\\'),
                "members of a plain _meta object not listed: {text}"
            ),
            (None, None) => {}
        }
    }
    assert_eq!(
        edit(stamp::strip_edit_with(Some(params), Some(scan.meta.as_ref()))),
        edit(stamp::strip_edit(Some(params))),
        "strip edit of {text}"
    );
}

fuzz_target!(|data: &[u8]| {
    // Any text at all: the scan stops, whatever it is given.
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = scan_params(s);
    }
    check(data);
    let mut wrapped = b"{\"params\":".to_vec();
    wrapped.extend_from_slice(data);
    wrapped.push(b'}');
    check(&wrapped);
});
