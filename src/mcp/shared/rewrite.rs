//! Byte-exact rewriting of one JSON-RPC message: finding a member's value in
//! the message's own text, without parsing it into a tree, and splicing new
//! bytes over exactly that value. The [`Mux`](super::Mux) rewrites ids,
//! progress tokens and cancelled `requestId`s with these.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::proto::jsonrpc::Id;

/// `params._meta.progressToken` of a request, if it is a string or an integer
/// (the types MCP allows; anything else is left alone and never routed).
pub(super) fn progress_token_in_request(params: &RawValue) -> Option<&RawValue> {
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
    let token = member(member(params, "_meta")?, "progressToken")?;
    match Id::from_raw(token) {
        Id::Num(_) | Id::Str(_) => Some(token),
        Id::Other(_) => None,
    }
}

/// Replaces each `(value, with)` in `base`: `value` must be borrowed from
/// `base` itself (as everything `peek` returns is), and the values must not
/// overlap. Returns `None` if either does not hold, so a message is never
/// sent half-rewritten.
pub(crate) fn splice(base: &[u8], edits: &mut [(&RawValue, &[u8])]) -> Option<Vec<u8>> {
    let origin = base.as_ptr().addr();
    let mut spans: Vec<(usize, usize, &[u8])> = Vec::with_capacity(edits.len());
    for (raw, with) in edits.iter() {
        let text = raw.get().as_bytes();
        let start = text.as_ptr().addr().checked_sub(origin)?;
        let end = start.checked_add(text.len())?;
        // Same address and same bytes: certainly this value, not a copy.
        if base.get(start..end)? != text {
            return None;
        }
        spans.push((start, end, with));
    }
    spans.sort_unstable_by_key(|&(start, _, _)| start);
    let grow: usize = spans.iter().map(|(_, _, with)| with.len()).sum();
    let mut out = Vec::with_capacity(base.len() + grow);
    let mut at = 0;
    for (start, end, with) in spans {
        if start < at {
            return None;
        }
        out.extend_from_slice(&base[at..start]);
        out.extend_from_slice(with);
        at = end;
    }
    out.extend_from_slice(&base[at..]);
    Some(out)
}

/// `obj.<key>` borrowed from `obj`'s text; `None` if `obj` is not an object
/// or has no such member. Names are compared unescaped; with duplicate names
/// the last wins, as in `peek`.
pub(crate) fn member<'a>(obj: &'a RawValue, key: &str) -> Option<&'a RawValue> {
    let text = obj.get();
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
    obj: &'a RawValue,
    keys: [&str; N],
) -> Option<[Option<&'a RawValue>; N]> {
    let text = obj.get();
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

/// The members of a JSON object's text that was validated already (it
/// came from a parsed message), found by scanning it rather than parsing
/// it again: `(name, value text)` in order, duplicates included. `None`
/// when a name has escapes (its text is not its name) or the text is not
/// shaped as a valid object is; the caller then parses. Every loop moves
/// forward through the text and stops at its end.
pub(crate) fn object_members(text: &str) -> Option<Vec<(&str, &str)>> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    let mut out = Vec::new();
    if b.get(i) == Some(&b'}') {
        return (skip_ws(b, i + 1) == b.len()).then_some(out);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let end = string_end(b, i)?;
        let name = text.get(i + 1..end - 1)?;
        if name.contains('\\') {
            return None;
        }
        i = skip_ws(b, end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        let value_end = value_end(b, i)?;
        out.push((name, text.get(i..value_end)?));
        i = skip_ws(b, value_end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return (skip_ws(b, i + 1) == b.len()).then_some(out),
            _ => return None,
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// Index just past the string that opens at `start` (a `"`).
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut j = start + 1;
    loop {
        j += memchr::memchr2(b'"', b'\\', b.get(j..)?)?;
        match b.get(j)? {
            b'"' => return Some(j + 1),
            _ => j += 2,
        }
    }
}

/// Index just past the value that starts at `start`.
fn value_end(b: &[u8], start: usize) -> Option<usize> {
    match b.get(start)? {
        b'"' => string_end(b, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = start;
            loop {
                match b.get(j)? {
                    b'"' => j = string_end(b, j)?,
                    b'{' | b'[' => {
                        depth += 1;
                        j += 1;
                    }
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        j += 1;
                        if depth == 0 {
                            return Some(j);
                        }
                    }
                    _ => j += 1,
                }
            }
        }
        _ => {
            let mut j = start;
            while !matches!(
                b.get(j),
                None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            ) {
                j += 1;
            }
            (j > start).then_some(j)
        }
    }
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
