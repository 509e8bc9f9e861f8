//! Byte-exact rewriting of one JSON-RPC message: finding a member's value in
//! the message's own text, without parsing it into a tree, and splicing new
//! bytes over exactly that value. The [`Mux`](super::Mux) rewrites ids,
//! progress tokens and cancelled `requestId`s with these.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::proto::jsonrpc::{Id, Raw};
use crate::proto::scan::{self, value_end, ws as skip_ws};

/// `params._meta.progressToken` of a request, if it is a string or an integer
/// (the types MCP allows; anything else is left alone and never routed).
pub(super) fn progress_token_in_request(params: Raw<'_>) -> Option<Raw<'_>> {
    // Cheap prefilter. A name can be spelled with escapes
    // (`"progress\u0054oken"`), and a token that slipped through unrewritten
    // could collide with another session's, so any backslash means "look".
    let bytes = params.get().as_bytes();
    if crate::proto::jsonrpc::FIND_PROGRESS_TOKEN
        .find(bytes)
        .is_none()
        && memchr::memchr(b'\\', bytes).is_none()
    {
        return None;
    }
    let token = Raw::from(member(member(params, "_meta")?, "progressToken")?);
    match Id::from_raw(token) {
        Id::Num(_) | Id::Str(_) => Some(token),
        Id::Other(_) => None,
    }
}

/// A value's text borrowed from a message: a `&RawValue` serde_json
/// handed out, or a `&str` the relay's own scan of validated text found
/// (`scan_params`). Either way the text is where the value stands in the
/// message, so [`splice`] can tell its place by its address.
pub(crate) trait Span<'a>: Copy {
    fn text(self) -> &'a str;
}

impl<'a> Span<'a> for &'a RawValue {
    fn text(self) -> &'a str {
        self.get()
    }
}

impl<'a> Span<'a> for crate::proto::jsonrpc::Raw<'a> {
    fn text(self) -> &'a str {
        self.get()
    }
}

impl<'a> Span<'a> for &'a str {
    fn text(self) -> &'a str {
        self
    }
}

/// Replaces each `(value, with)` in `base`: `value` must be borrowed from
/// `base` itself (as everything `peek` returns is), and the values must not
/// overlap. Returns `None` if either does not hold, so a message is never
/// sent half-rewritten.
pub(crate) fn splice<'t, S: Span<'t>>(base: &[u8], edits: &mut [(S, &[u8])]) -> Option<Vec<u8>> {
    let origin = base.as_ptr().addr();
    // In the order they stand in `base`: by address, each checked below to
    // be in `base` and after the one before.
    edits.sort_unstable_by_key(|&(raw, _)| raw.text().as_ptr().addr());
    let grow: usize = edits.iter().map(|(_, with)| with.len()).sum();
    let mut out = Vec::with_capacity(base.len() + grow);
    let mut at = 0;
    for &(raw, with) in edits.iter() {
        let text = raw.text().as_bytes();
        let start = text.as_ptr().addr().checked_sub(origin)?;
        let end = start.checked_add(text.len())?;
        // Same address and same bytes: certainly this value, not a copy.
        if start < at || base.get(start..end)? != text {
            return None;
        }
        out.extend_from_slice(base.get(at..start)?);
        out.extend_from_slice(with);
        at = end;
    }
    out.extend_from_slice(base.get(at..)?);
    Some(out)
}

/// `obj.<key>` borrowed from `obj`'s text; `None` if `obj` is not an object
/// or has no such member. Names are compared unescaped; with duplicate names
/// the last wins, as in `peek`.
pub(crate) fn member<'a>(obj: impl Span<'a>, key: &str) -> Option<&'a RawValue> {
    let text = obj.text();
    if !text.starts_with('{') {
        return None;
    }
    let mut de = serde_json::Deserializer::from_str(text);
    Member(key).deserialize(&mut de).ok().flatten()
}

/// Several members of `obj` in one read: `found[i]` is `obj.<keys[i]>`
/// (names compared unescaped, the last of duplicates wins, as [`member`]);
/// `None` if `obj` is not an object.
pub(crate) fn members<'a, const N: usize>(
    obj: impl Span<'a>,
    keys: [&str; N],
) -> Option<[Option<&'a RawValue>; N]> {
    let text = obj.text();
    if !text.starts_with('{') {
        return None;
    }
    let mut de = serde_json::Deserializer::from_str(text);
    Members(keys).deserialize(&mut de).ok()
}

struct Members<'k, const N: usize>([&'k str; N]);

impl<'de, const N: usize> DeserializeSeed<'de> for Members<'_, N> {
    type Value = [Option<&'de RawValue>; N];
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for Members<'_, N> {
    type Value = [Option<&'de RawValue>; N];
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = [None; N];
        while let Some(hit) = map.next_key_seed(KeyAt(&self.0))? {
            match hit.and_then(|i| found.get_mut(i)) {
                Some(slot) => *slot = Some(map.next_value::<&RawValue>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

/// A member name: the index of the wanted name it is, compared without
/// allocating.
struct KeyAt<'s, 'k, const N: usize>(&'s [&'k str; N]);

impl<'de, const N: usize> DeserializeSeed<'de> for KeyAt<'_, '_, N> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<const N: usize> Visitor<'_> for KeyAt<'_, '_, N> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|k| *k == v))
    }
}

/// [`member`] of a whole message's text, read once: `None` also when the
/// text is not one JSON object (trailing bytes included), so a caller
/// needs no separate validating parse first.
pub(crate) fn member_of_text<'a>(text: &'a str, key: &str) -> Option<&'a RawValue> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let found = Member(key).deserialize(&mut de).ok()?;
    de.end().ok()?;
    found
}

struct Member<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for Member<'_> {
    type Value = Option<&'de RawValue>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Member<'_> {
    type Value = Option<&'de RawValue>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(hit) = map.next_key_seed(KeyIs(self.0))? {
            if hit {
                found = Some(map.next_value::<&RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// A member name, compared against the wanted one without allocating.
struct KeyIs<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

/// The members of a request's `params` the era front reads, found in one
/// scan of its text (validated where the message was read, so it is not
/// parsed again): `name` and `uri` (what `Mcp-Name` must name) and `_meta`
/// with its own members (what the bridge strips and reads), and
/// `requestState` (what names a call waiting for input). Values are
/// their text as it stands in the message; names are compared unescaped
/// and the last of duplicates wins, as [`members`] has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamScan<'a> {
    pub name: Option<&'a str>,
    pub uri: Option<&'a str>,
    pub meta: Option<MetaScan<'a>>,
    pub request_state: Option<&'a str>,
}

/// `params._meta` as [`scan_params`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaScan<'a> {
    /// Its value's text, borrowed from the message (a [`splice`] target).
    pub text: &'a str,
    /// Its members in order, duplicates included ([`object_members`]);
    /// `None` when it is no object or a name has escapes (a reader then
    /// parses `text`), or when they were not listed ([`param_scan`] from
    /// the envelope's spans: a reader lists them, `object_members`).
    pub members: Option<Vec<(&'a str, &'a str)>>,
    /// It is an object with at least one member and every member's name
    /// is plain (no escapes) and reserved (`io.modelcontextprotocol/…`):
    /// stripped, it is `{}`. Known only from `peek`'s scan
    /// ([`param_scan`]); `false` says nothing.
    pub reserved_only: bool,
}

impl<'a> MetaScan<'a> {
    fn new(text: &'a str) -> MetaScan<'a> {
        MetaScan {
            text,
            members: object_members(text),
            reserved_only: false,
        }
    }
}

/// [`ParamScan`] of a message's `params`: from the spans `peek`'s scan
/// recorded while it validated them (`_meta`'s members not listed), else
/// [`scan_params`] of its text. `None` without `params` or when it is not
/// an object.
pub fn param_scan<'a>(env: &crate::proto::jsonrpc::Envelope<'a>) -> Option<ParamScan<'a>> {
    let Some(s) = env.params_spans else {
        return scan_params(env.params?.get());
    };
    Some(ParamScan {
        name: s.name,
        uri: s.uri,
        meta: s.meta.map(|text| MetaScan {
            text,
            members: None,
            reserved_only: s.meta_reserved_only,
        }),
        request_state: s.request_state,
    })
}

/// [`ParamScan`] of `params`' text; `None` when it is not an object. The
/// relay's own scan reads it, `_meta`'s members on the way through (not
/// skipped, then read again); a name with escapes in `params` sends it to
/// the parser ([`members`]), which finds the same values, and one in
/// `_meta` leaves `_meta`'s members to its reader.
pub fn scan_params(params: &str) -> Option<ParamScan<'_>> {
    let b = params.as_bytes();
    let mut out = ParamScan::default();
    let start = skip_ws(b, 0);
    let end = members_at(params, start, |name, at| match name {
        "name" | "uri" | "requestState" => {
            let end = value_end(b, at)?;
            let value = Some(params.get(at..end)?);
            match name {
                "name" => out.name = value,
                "uri" => out.uri = value,
                _ => out.request_state = value,
            }
            Some(end)
        }
        "_meta" => {
            // Room for a modern envelope's usual members at once.
            let mut members = Vec::with_capacity(4);
            let scanned = match b.get(at) {
                Some(b'{') => members_at(params, at, |n, v| {
                    let end = value_end(b, v)?;
                    members.push((n, params.get(v..end)?));
                    Some(end)
                }),
                _ => None,
            };
            let (end, members) = match scanned {
                Some(end) => (end, Some(members)),
                None => (value_end(b, at)?, None),
            };
            out.meta = Some(MetaScan {
                text: params.get(at..end)?,
                members,
                reserved_only: false,
            });
            Some(end)
        }
        _ => value_end(b, at),
    });
    if end.is_some_and(|end| skip_ws(b, end) == b.len()) {
        return Some(out);
    }
    let [name, uri, meta, state] = members(params, ["name", "uri", "_meta", "requestState"])?;
    Some(ParamScan {
        name: name.map(RawValue::get),
        uri: uri.map(RawValue::get),
        meta: meta.map(|m| MetaScan::new(m.get())),
        request_state: state.map(RawValue::get),
    })
}

/// The members of a JSON object's text that was validated already (it
/// came from a parsed message), found by scanning it rather than parsing
/// it again: `(name, value text)` in order, duplicates included. `None`
/// when a name has escapes (its text is not its name) or the text is not
/// shaped as a valid object is; the caller then parses. Every loop moves
/// forward through the text and stops at its end.
pub(crate) fn object_members(text: &str) -> Option<Vec<(&str, &str)>> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let end = members_at(text, skip_ws(b, 0), |name, at| {
        let end = value_end(b, at)?;
        out.push((name, text.get(at..end)?));
        Some(end)
    })?;
    (skip_ws(b, end) == b.len()).then_some(out)
}

/// Scans the object that opens at `start` (a `{`) with `peek`'s scan
/// (`proto::scan::members`): `value(name, at)` is given each member's name
/// and where its value starts, and returns where that value ends (having
/// read it as it needs). Returns the index just past the closing `}`;
/// `None` when a name has escapes or the text is not a valid object
/// (`value` may have seen some members by then).
fn members_at<'a>(
    text: &'a str,
    start: usize,
    mut value: impl FnMut(&'a str, usize) -> Option<usize>,
) -> Option<usize> {
    scan::members(text, start, |name, escaped, at| {
        if escaped {
            return None;
        }
        value(std::str::from_utf8(name).ok()?, at)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_members_scans_valid_text_and_refuses_anything_else() {
        let text = r#" {"a" : [1,{"b":"]}\""}], "c":"x\\", "a":-0.5e1,"d":{} } "#;
        let found = object_members(text).expect("an object");
        assert_eq!(
            found,
            vec![
                ("a", r#"[1,{"b":"]}\""}]"#),
                ("c", r#""x\\""#),
                ("a", "-0.5e1"),
                ("d", "{}")
            ]
        );
        // Each value is what the parser reads there.
        for (name, value) in &found {
            let v: serde_json::Value = serde_json::from_str(value).expect("a value");
            assert!(!name.is_empty() && !v.is_null() || *value == "null");
        }
        // Every cut short is refused, never a panic.
        for end in 0..text.trim_end().len() - 1 {
            if let Some(prefix) = text.get(..end) {
                assert!(object_members(prefix).is_none(), "{prefix}");
            }
        }
        assert!(object_members(r#"{"a\u0062":1}"#).is_none());
        assert!(object_members("[1]").is_none());
        assert!(object_members(r#"{"a":1}x"#).is_none());
        assert_eq!(object_members("{ }"), Some(Vec::new()));
    }

    /// What the parser finds: the reference [`scan_params`] must agree with.
    #[allow(clippy::type_complexity)]
    fn parsed(text: &str) -> Option<(Option<&str>, Option<&str>, Option<&str>, Option<&str>)> {
        let [n, u, m, r] = members(text, ["name", "uri", "_meta", "requestState"])?;
        Some((
            n.map(RawValue::get),
            u.map(RawValue::get),
            m.map(RawValue::get),
            r.map(RawValue::get),
        ))
    }

    /// Whether `part` is a slice of `whole` (its place, not a copy).
    fn within(whole: &str, part: &str) -> bool {
        let (w, p) = (whole.as_ptr().addr(), part.as_ptr().addr());
        p >= w && p + part.len() <= w + whole.len()
    }

    #[test]
    fn scan_params_agrees_with_the_parser_to_the_byte() {
        let cases = [
            r#"{"name":"echo","arguments":{"text":"x"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}"#,
            // Whitespace everywhere JSON allows it.
            "{ \"name\" :\t\"echo\" ,\r\n \"_meta\" : { \"a\" : [ 1 , 2 ] } , \"uri\":\"u\" \n}",
            // Escaped names: the scan hands over to the parser.
            r#"{"n\u0061me":"a","_meta":{"k":1}}"#,
            r#"{"name":"a","_m\u0065ta":{"k":1}}"#,
            // Escapes in values are no obstacle.
            r#"{"name":"a\"b\\","uri":"\u0041"}"#,
            // Duplicates: the last wins.
            r#"{"name":"first","_meta":{"a":1},"name":"second","_meta":{"b":2}}"#,
            // `name`, `uri` and `_meta` nested deeper are not params'.
            r#"{"arguments":{"name":"inner","_meta":{"x":1}},"uri":"outer"}"#,
            // Nested `_meta` inside `_meta`, strings holding braces.
            r#"{"_meta":{"_meta":{"name":"n"},"s":"}{][\""}}"#,
            // Values of every type.
            r#"{"name":null,"uri":-1.5e3,"_meta":true,"x":[{},[]]}"#,
            r#"{"requestState":"mcp-relay.1f.x","inputResponses":{"a":{}},"requestState":7}"#,
            r#"{"request\u0053tate":"s","name":"n"}"#,
            r#"{}"#,
            r#"{ }"#,
        ];
        for text in cases {
            let scan = scan_params(text).expect(text);
            let (n, u, m, r) = parsed(text).expect(text);
            assert_eq!(scan.request_state, r, "{text}");
            assert_eq!(scan.name, n, "{text}");
            assert_eq!(scan.uri, u, "{text}");
            assert_eq!(scan.meta.as_ref().map(|m| m.text), m, "{text}");
            for v in [scan.name, scan.uri, scan.meta.as_ref().map(|m| m.text)]
                .into_iter()
                .flatten()
            {
                assert!(within(text, v), "{text}: {v} is not borrowed");
                assert!(serde_json::from_str::<&RawValue>(v).is_ok(), "{v}");
            }
            if let Some(meta) = &scan.meta {
                assert_eq!(meta.members, object_members(meta.text), "{text}");
            }
        }
        // Not an object: nothing, as the parser says.
        for text in ["[1,2]", "\"s\"", "7", "null", "[ ]"] {
            assert_eq!(scan_params(text), None, "{text}");
            assert_eq!(parsed(text), None, "{text}");
        }
        // `_meta` with an escaped name or of another type: its text is
        // known, its members are left to a parser.
        let scan = scan_params(r#"{"_meta":{"a\u0062":1}}"#).unwrap();
        assert_eq!(
            scan.meta.map(|m| (m.text, m.members)),
            Some((r#"{"a\u0062":1}"#, None))
        );
        let scan = scan_params(r#"{"_meta":[1]}"#).unwrap();
        assert_eq!(scan.meta.map(|m| (m.text, m.members)), Some(("[1]", None)));
        let scan = scan_params(r#"{"_meta":{"k":"v","k":{"x":[]}}}"#).unwrap();
        assert_eq!(
            scan.meta.and_then(|m| m.members),
            Some(vec![("k", r#""v""#), ("k", r#"{"x":[]}"#)])
        );
    }

    #[test]
    fn member_lookup_unescapes_names_and_ignores_nesting() {
        let v: &RawValue =
            serde_json::from_str(r#"{"a":{"requestId":1},"request\u0049d" : "x"}"#).unwrap();
        assert_eq!(member(v, "requestId").map(RawValue::get), Some(r#""x""#));
        assert!(member(v, "missing").is_none());
        let arr: &RawValue = serde_json::from_str("[1,2]").unwrap();
        assert!(member(arr, "requestId").is_none());
    }

    #[test]
    fn members_finds_several_names_in_one_read() {
        let v: &RawValue =
            serde_json::from_str(r#"{"name":"a","x":{"name":"no"},"_m\u0065ta":{},"name":"b"}"#)
                .unwrap();
        let [name, meta, uri] = members(v, ["name", "_meta", "uri"]).unwrap();
        assert_eq!(name.map(RawValue::get), Some(r#""b""#));
        assert_eq!(meta.map(RawValue::get), Some("{}"));
        assert!(uri.is_none());
        let arr: &RawValue = serde_json::from_str("[1]").unwrap();
        assert!(members(arr, ["name"]).is_none());
    }

    #[test]
    fn member_of_text_reads_the_whole_text_once() {
        let text = r#" {"id":1,"result":{"a":[1]},"x":null}"#;
        assert_eq!(
            member_of_text(text, "result").map(RawValue::get),
            Some(r#"{"a":[1]}"#)
        );
        assert!(member_of_text(text, "error").is_none());
        // Not one object: trailing bytes, an array, broken JSON.
        assert!(member_of_text(r#"{"result":1} x"#, "result").is_none());
        assert!(member_of_text("[1]", "result").is_none());
        assert!(member_of_text(r#"{"result":1"#, "result").is_none());
    }

    #[test]
    fn splice_refuses_values_not_borrowed_from_the_base() {
        let base = br#"{"id":1}"#;
        let elsewhere: &RawValue = serde_json::from_str("1").unwrap();
        assert_eq!(splice(base, &mut [(elsewhere, b"2")]), None);
    }
}
