//! The fast path of [`jsonrpc::peek`](super::jsonrpc::peek): one pass over a
//! single message's text that validates it as JSON and records the spans
//! of its top-level `id`, `method`, `params` and `result`, without a
//! deserializer (serde_json's costs about ten instructions a byte here,
//! mostly in the machinery around its skips). On the way it also notes
//! what the fronts would otherwise read again: `params`' own members
//! ([`ParamSpans`]), whether `method` is written without escapes, and
//! whether `result` already has a member the era bridge writes.
//!
//! It is a fast path, never the judge: it returns `None` for anything it
//! does not fully handle (a member name with escapes at the top, in
//! `params` or in its `_meta`; a member it records written twice, which
//! serde_json's reading marks as `proto::unique` says; nesting deeper than
//! [`MAX_DEPTH`]) and for anything it finds invalid, and the caller then
//! parses with serde_json, whose verdict and error text stand.
//! What it accepts, serde_json accepts with the same members; the
//! `envelope_scan` fuzz target and the tests below hold it to that.
//!
//! Its rules are serde_json's for values it skips: strings may not hold
//! control characters, escapes are the JSON ones (`\u` with four hex
//! digits, surrogates unchecked, as serde_json leaves them when it only
//! skips), numbers follow the JSON grammar (no leading zeros, a digit after
//! `.` and after an exponent), `true`/`false`/`null` exactly, no trailing
//! commas, whitespace is space, tab, CR and LF.

use super::jsonrpc::{Envelope, Raw};

/// The prefix of the `_meta` member names MCP reserves for the protocol
/// (2026-07-28: the version, client info and capabilities a request
/// carries), which the era bridge strips toward a handshake-era server.
pub const RESERVED_PREFIX: &str = "io.modelcontextprotocol/";

/// Containers nested deeper than this are left to serde_json.
pub const MAX_DEPTH: usize = 128;

/// `params`' members the relay reads (`shared::ParamScan`'s), recorded
/// while the scan validated them: each value's text as it stands in the
/// message, the last of duplicates winning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParamSpans<'a> {
    pub name: Option<&'a str>,
    pub uri: Option<&'a str>,
    pub request_state: Option<&'a str>,
    pub meta: Option<&'a str>,
    /// `meta` is an object with at least one member, each named plainly
    /// (no escapes) with the reserved prefix `io.modelcontextprotocol/`:
    /// what the era bridge strips is all of it.
    pub meta_reserved_only: bool,
}

/// The members a 2026-07-28 result carries at its top level that the era
/// bridge writes into a handshake-era server's result.
const STAMPED: [&[u8]; 3] = [b"resultType", b"ttlMs", b"cacheScope"];

/// The envelope of `text` (the whole message, valid UTF-8), or `None`:
/// not handled here (see the module's notes). An object `params` whose
/// member names have no escapes also gets its [`ParamSpans`].
pub fn envelope(text: &str) -> Option<Envelope<'_>> {
    let b = text.as_bytes();
    let start = ws(b, 0);
    let mut env = Envelope::default();
    let end = members(text, start, |key, escaped, at| {
        if escaped {
            // serde_json decodes the names it matches: its verdict.
            return None;
        }
        // What the fronts read of `method` and `result` beyond their text,
        // found on the way through them.
        let (mut method_plain, mut result_unstamped) = (false, false);
        let (end, spans) = match (key, b.get(at)) {
            (b"method", Some(b'"')) => {
                let (end, escaped) = string_end(b, at)?;
                method_plain = !escaped;
                (end, None)
            }
            (b"result", Some(b'{')) => {
                let mut clean = true;
                let end = members(text, at, |name, escaped, at| {
                    clean &= !escaped && !STAMPED.contains(&name);
                    value_end(b, at)
                })?;
                result_unstamped = clean;
                (end, None)
            }
            (b"params", Some(b'{')) => {
                let mut spans = ParamSpans::default();
                let mut request_id = false;
                let end = members(text, at, |key, escaped, at| {
                    if escaped {
                        // serde_json decodes the names, and so finds the
                        // duplicates among them: its verdict.
                        return None;
                    }
                    let end = match (key, b.get(at)) {
                        (b"_meta", Some(b'{')) => {
                            // Its names on the way: whether the bridge's
                            // strip leaves anything, and one progress token.
                            let mut reserved = 0usize;
                            let mut others = false;
                            let mut token = false;
                            let end = reserved_members(text, at, |name, escaped, prefixed, at| {
                                let again =
                                    name == b"progressToken" && std::mem::replace(&mut token, true);
                                if escaped || again {
                                    return None;
                                }
                                if prefixed {
                                    reserved += 1;
                                } else {
                                    others = true;
                                }
                                value_end(b, at)
                            })?;
                            spans.meta_reserved_only = reserved > 0 && !others;
                            end
                        }
                        (b"_meta", _) => {
                            spans.meta_reserved_only = false;
                            value_end(b, at)?
                        }
                        _ => value_end(b, at)?,
                    };
                    let value = text.get(at..end);
                    // A member the relay reads, written twice, is left to
                    // serde_json, which marks it (`proto::unique`).
                    let slot = match key {
                        b"name" => &mut spans.name,
                        b"uri" => &mut spans.uri,
                        b"requestState" => &mut spans.request_state,
                        b"_meta" => &mut spans.meta,
                        b"requestId" if std::mem::replace(&mut request_id, true) => return None,
                        _ => return Some(end),
                    };
                    if slot.replace(value?).is_some() {
                        return None;
                    }
                    Some(end)
                })?;
                (end, Some(spans))
            }
            _ => (value_end(b, at)?, None),
        };
        let raw = Raw::new(text.get(at..end)?);
        // A member written twice is left to serde_json, which marks it
        // (`proto::unique`).
        let slot = match key {
            b"id" => Some(&mut env.id),
            b"method" => Some(&mut env.method),
            b"params" => Some(&mut env.params),
            b"result" => Some(&mut env.result),
            _ => None,
        };
        if let Some(slot) = slot
            && slot.replace(raw).is_some()
        {
            return None;
        }
        match key {
            b"method" => env.method_plain = method_plain,
            b"params" => env.params_spans = spans,
            b"result" => {
                env.result_unstamped = result_unstamped;
                env.is_response = true;
            }
            b"error" => env.is_response = true,
            _ => {}
        }
        Some(end)
    })?;
    (ws(b, end) == b.len()).then_some(env)
}

/// Scans the object that opens at `start` (a `{`), validating it: `value`
/// is given each member's name (its bytes between the quotes), whether the
/// name has escapes, and where its value starts, and returns where that
/// value ends, having validated it. Returns the index just past the `}`.
#[inline]
pub(crate) fn members<'a>(
    text: &'a str,
    start: usize,
    mut value: impl FnMut(&'a [u8], bool, usize) -> Option<usize>,
) -> Option<usize> {
    object(text, start, false, |name, escaped, _, at| {
        value(name, escaped, at)
    })
}

/// [`members`] and [`reserved_members`]: with `reserved`, a name that
/// begins with [`RESERVED_PREFIX`] is scanned from past it, and `value`'s
/// third argument says so.
#[inline]
fn object<'a>(
    text: &'a str,
    start: usize,
    reserved: bool,
    mut value: impl FnMut(&'a [u8], bool, bool, usize) -> Option<usize>,
) -> Option<usize> {
    let b = text.as_bytes();
    if b.get(start) != Some(&b'{') {
        return None;
    }
    let mut i = ws(b, start + 1);
    if b.get(i) == Some(&b'}') {
        return Some(i + 1);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let prefixed = reserved && reserved_at(b, i + 1);
        // `string_end` scans from one past the index it is given.
        let from = if prefixed {
            i + RESERVED_WORDS.len() * 8
        } else {
            i
        };
        let (key_end, escaped) = string_end(b, from)?;
        let key = b.get(i + 1..key_end - 1)?;
        i = ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = ws(b, value(key, escaped, prefixed, ws(b, i + 1))?);
        match b.get(i) {
            Some(b',') => i = ws(b, i + 1),
            Some(b'}') => return Some(i + 1),
            _ => return None,
        }
    }
}

/// [`members`] of a `_meta` object, whose 2026-07-28 names all begin with
/// [`RESERVED_PREFIX`]: `value` is told whether a name is one of those
/// (with the prefix and no escapes) and where its value starts. A name's
/// prefix is compared as three words, and its scan starts past it (the
/// prefix holds no quote, backslash or control character): the long
/// reserved names, which every 2026-07-28 request carries, cost a third
/// of their scan, and nothing else is compared.
#[inline]
fn reserved_members<'a>(
    text: &'a str,
    start: usize,
    mut value: impl FnMut(&'a [u8], bool, bool, usize) -> Option<usize>,
) -> Option<usize> {
    object(text, start, true, |name, escaped, prefixed, at| {
        value(name, escaped, prefixed && !escaped, at)
    })
}

/// [`RESERVED_PREFIX`] as the three little-endian words it is made of.
const RESERVED_WORDS: [u64; 3] = {
    let p = RESERVED_PREFIX.as_bytes();
    assert!(p.len() == 24);
    let mut words = [0u64; 3];
    let mut i = 0;
    while i < 24 {
        words[i / 8] |= (p[i] as u64) << (8 * (i % 8));
        i += 1;
    }
    words
};

/// Whether `b` holds [`RESERVED_PREFIX`] at `at`.
#[inline]
fn reserved_at(b: &[u8], at: usize) -> bool {
    let Some(bytes) = at.checked_add(24).and_then(|end| b.get(at..end)) else {
        return false;
    };
    bytes
        .chunks_exact(8)
        .zip(RESERVED_WORDS)
        .all(|(chunk, word)| {
            <[u8; 8]>::try_from(chunk).is_ok_and(|c| u64::from_le_bytes(c) == word)
        })
}

/// Index of the first byte at or after `i` that is not JSON whitespace.
#[inline]
pub(crate) fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// The end (just past) of the value that starts at `i` (not whitespace),
/// validated; `None` when it is not valid or nests deeper than
/// [`MAX_DEPTH`]. A string or a number, most values, ends here; the rest
/// take [`nested_end`].
#[inline]
pub fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => Some(string_end(b, i)?.0),
        b'-' | b'0'..=b'9' => number_end(b, i),
        _ => nested_end(b, i),
    }
}

/// [`value_end`] of any value, containers included. Iterative: a bit per
/// open container (1 = object).
fn nested_end(b: &[u8], mut i: usize) -> Option<usize> {
    let mut kinds = [0u64; MAX_DEPTH / 64];
    let mut depth = 0usize;
    loop {
        // At the start of a value.
        match *b.get(i)? {
            b'"' => i = string_end(b, i)?.0,
            open @ (b'{' | b'[') => {
                let j = ws(b, i + 1);
                let close = if open == b'{' { b'}' } else { b']' };
                if b.get(j) == Some(&close) {
                    i = j + 1;
                } else {
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    let bit = 1u64 << (depth % 64);
                    let word = kinds.get_mut(depth / 64)?;
                    if open == b'{' {
                        *word |= bit;
                        i = member_value(b, j)?;
                    } else {
                        *word &= !bit;
                        i = j;
                    }
                    depth += 1;
                    continue;
                }
            }
            b't' => i = literal(b, i, b"true")?,
            b'f' => i = literal(b, i, b"false")?,
            b'n' => i = literal(b, i, b"null")?,
            b'-' | b'0'..=b'9' => i = number_end(b, i)?,
            _ => return None,
        }
        // After a value: close what ends here, then the next value.
        loop {
            if depth == 0 {
                return Some(i);
            }
            let top = depth - 1;
            let object = kinds.get(top / 64)? >> (top % 64) & 1 == 1;
            i = ws(b, i);
            match (*b.get(i)?, object) {
                (b',', true) => {
                    i = member_value(b, ws(b, i + 1))?;
                    break;
                }
                (b',', false) => {
                    i = ws(b, i + 1);
                    break;
                }
                (b'}', true) | (b']', false) => {
                    depth = top;
                    i += 1;
                }
                _ => return None,
            }
        }
    }
}

/// At a member's name (`"`): where its value starts, past the name, the
/// colon and whitespace.
#[inline]
fn member_value(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let j = ws(b, string_end(b, i)?.0);
    if b.get(j) != Some(&b':') {
        return None;
    }
    Some(ws(b, j + 1))
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    let end = i.checked_add(word.len())?;
    (b.get(i..end)? == word).then_some(end)
}

/// The end of the number that starts at `i` (`-` or a digit).
fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |b: &[u8], mut i: usize| {
        while let Some(b'0'..=b'9') = b.get(i) {
            i += 1;
        }
        i
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i)? {
        b'0' => {
            i += 1;
            if let Some(b'0'..=b'9') = b.get(i) {
                return None;
            }
        }
        b'1'..=b'9' => i = digits(b, i + 1),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        let end = digits(b, i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let end = digits(b, i);
        if end == i {
            return None;
        }
        i = end;
    }
    Some(i)
}

/// At a string's opening quote: the index just past its closing quote and
/// whether it holds escapes; `None` when it is unterminated, holds a
/// control character or an escape JSON does not have.
///
/// Most strings in a message are short names and values without escapes:
/// this finds their end (a word or two of [`special`]) and leaves a string
/// with escapes to [`escaped_end`], out of line, so the common string does
/// not pay for the escape loop's setup.
#[inline]
pub fn string_end(b: &[u8], start: usize) -> Option<(usize, bool)> {
    let j = special(b, start.checked_add(1)?)?;
    match *b.get(j)? {
        b'"' => Some((j + 1, false)),
        b'\\' => escaped_end(b, j),
        // A control character.
        _ => None,
    }
}

/// The rest of a string from its first escape (at `j`, a backslash): as
/// [`string_end`], with escapes.
#[cold]
#[inline(never)]
fn escaped_end(b: &[u8], mut j: usize) -> Option<(usize, bool)> {
    loop {
        match *b.get(j)? {
            b'"' => return Some((j + 1, true)),
            b'\\' => {
                j = match *b.get(j + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => j + 2,
                    b'u' => {
                        let hex = b.get(j + 2..j + 6)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        j + 6
                    }
                    _ => return None,
                };
            }
            // A control character.
            _ => return None,
        }
        j = special(b, j)?;
    }
}

/// Index of the first `"`, `\` or control character (below 0x20) at or
/// after `from`, eight bytes at a time; `None` when there is none.
#[inline]
fn special(b: &[u8], mut from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const QUOTE: u64 = ONES * b'"' as u64;
    const BACKSLASH: u64 = ONES * b'\\' as u64;
    const SPACE: u64 = ONES * 0x20;
    while let Some(chunk) = b.get(from..from.checked_add(8)?) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let (q, s) = (w ^ QUOTE, w ^ BACKSLASH);
        // Flags a zero byte of `q` or `s` (a quote or a backslash) and a
        // byte of `w` below 0x20; a borrow can flag bytes above a true one,
        // never below it, so the lowest flag is a true one.
        let found =
            (q.wrapping_sub(ONES) & !q | s.wrapping_sub(ONES) & !s | w.wrapping_sub(SPACE) & !w)
                & HIGH;
        if found != 0 {
            return Some(from + (found.trailing_zeros() / 8) as usize);
        }
        from += 8;
    }
    b.get(from..)?
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|i| from + i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::jsonrpc::{Envelope, serde_envelope};

    /// The scan agrees with serde_json: what it accepts, serde_json does,
    /// with the same members; what serde_json refuses, it refuses.
    fn agrees(text: &str) {
        let fast = envelope(text);
        let slow = serde_envelope(text).ok();
        match (&fast, &slow) {
            (Some(f), Some(s)) => {
                assert_eq!(fields(f), fields(s), "{text:?}");
                assert_eq!(f.is_response, s.is_response, "{text:?}");
            }
            (Some(_), None) => panic!("accepted what serde_json refuses: {text:?}"),
            (None, _) => {}
        }
    }

    fn fields<'a>(e: &Envelope<'a>) -> [Option<&'a str>; 4] {
        [e.id, e.method, e.params, e.result].map(|r| r.map(|r| r.get()))
    }

    #[test]
    fn common_messages_are_read_here_and_as_serde_json_reads_them() {
        let cases = [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#,
            r#"{"jsonrpc":"2.0","id":"a","result":{"content":[{"type":"text","text":"x"}],"isError":false}}"#,
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"m","data":null}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":0.5,"total":1e3}}"#,
            " \r\n\t{ \"id\" : 7 , \"method\" :\"m\" } \n",
            r#"{}"#,
            r#"{"params":[1,-0,0.5,1E+2,2e-3,-1.25e7,true,false,null,"",[],{},[[{}]]]}"#,
            r#"{"method":"m","params":{"s":"a\"b\\c\/d\b\f\n\r\t\u00e9\ud800"}}"#,
            "{\"method\":\"caf\u{e9} \u{1F600}\"}",
            r#"{"x":{"a":{"b":{"c":[{"d":[1,[2,[3]]]}]}}}}"#,
            // Escapes at a string's start and end, one after another, and
            // in member names below `params`.
            r#"{"method":"m","params":{"s":{"\"k\\":"\\","a\/b":"x\"y\"z\u0041"}}}"#,
        ];
        for text in cases {
            assert!(envelope(text).is_some(), "not read by the scan: {text:?}");
            agrees(text);
        }
        // Left to serde_json (`proto::unique`): a member the relay reads,
        // written twice; an escaped name in `params` or its `_meta`.
        for text in [
            r#"{"id":1,"id":2,"result":[],"result":{}}"#,
            r#"{"method":"m","params":{"\"k\\":"\\","a\/b":"x\"y\"z\u0041"}}"#,
            r#"{"method":"m","params":{"_meta":{"a\"b":1}}}"#,
        ] {
            assert!(envelope(text).is_none(), "{text:?}");
            agrees(text);
        }
    }

    #[test]
    fn params_members_are_recorded_as_scan_params_finds_them() {
        let cases = [
            r#"{"id":1,"method":"tools/call","params":{"name":"echo","arguments":{"name":"inner","_meta":{}},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","k":[1]}}}"#,
            r#"{"method":"resources/read","params":{ "uri" : "file:///a\"b" , "requestState":{"x":1}}}"#,
            r#"{"params":{"name":"second","_meta":7,"x":1,"x":2}}"#,
            r#"{"params":{}}"#,
        ];
        for text in cases {
            let env = envelope(text).expect(text);
            let spans = env.params_spans.expect(text);
            let scan = crate::mcp::shared::scan_params(env.params.unwrap().get()).expect(text);
            assert_eq!(spans.name, scan.name, "{text}");
            assert_eq!(spans.uri, scan.uri, "{text}");
            assert_eq!(spans.request_state, scan.request_state, "{text}");
            assert_eq!(spans.meta, scan.meta.as_ref().map(|m| m.text), "{text}");
        }
        // Not recorded: `params` no object.
        let env = envelope(r#"{"params":[1]}"#).expect("an array");
        assert_eq!(env.params_spans, None);
        // Not read here at all: an escaped member name in `params`, a
        // second `params`, a member the relay reads written twice.
        for text in [
            r#"{"params":{"n\u0061me":"a"}}"#,
            r#"{"params":{"name":"a"},"params":null}"#,
            r#"{"params":{"name":"first","_meta":{"a":1},"name":"second","_meta":7}}"#,
            r#"{"params":{"requestState":"s1","requestState":{"x":1}}}"#,
        ] {
            assert!(envelope(text).is_none(), "{text}");
        }
    }

    #[test]
    fn a_meta_of_reserved_names_only_is_told_apart() {
        let reserved_only = |meta: &str| {
            let text = format!(r#"{{"method":"m","params":{{"_meta":{meta}}}}}"#);
            let env = envelope(&text).expect(&text);
            agrees(&text);
            env.params_spans.expect(&text).meta_reserved_only
        };
        for meta in [
            r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}"#,
            r#"{ "io.modelcontextprotocol/a" : 1 , "io.modelcontextprotocol/clientInfo":{"name":"n"}}"#,
            // The prefix alone is a reserved name.
            r#"{"io.modelcontextprotocol/":{}}"#,
        ] {
            assert!(reserved_only(meta), "{meta}");
        }
        for meta in [
            "{}",
            r#"{"io.modelcontextprotocol/a":1,"progressToken":2}"#,
            r#"{"k":1,"io.modelcontextprotocol/a":1}"#,
            // A prefix cut short, or spelled in another case: not a plain
            // reserved name.
            r#"{"io.modelcontextprotocol":1}"#,
            r#"{"io.modelcontextprotoco":1}"#,
            r#"{"IO.modelcontextprotocol/a":1}"#,
        ] {
            assert!(!reserved_only(meta), "{meta}");
        }
        // Escaped after the prefix or in it: left to serde_json, which
        // decodes the names (`proto::unique`).
        for meta in [
            r#"{"io.modelcontextprotocol/a\"b":1}"#,
            r#"{"io.modelcontextprotocol/\u0041":1}"#,
            r#"{"io.modelcontextprotocol\/a":1}"#,
        ] {
            let text = format!(r#"{{"method":"m","params":{{"_meta":{meta}}}}}"#);
            assert!(envelope(&text).is_none(), "{meta}");
            agrees(&text);
        }
        // One byte of the prefix changed, at each of its places (each of
        // the three words compared).
        for at in 0..RESERVED_PREFIX.len() {
            let mut name = RESERVED_PREFIX.as_bytes().to_vec();
            name[at] = if name[at] == b'x' { b'y' } else { b'x' };
            let name = String::from_utf8(name).expect("ASCII");
            assert!(!reserved_only(&format!(r#"{{"{name}a":1}}"#)), "{name}");
        }
        // A reserved member and another, in either order.
        for meta in [
            r#"{"io.modelcontextprotocol/a":1,"io.modelcontextprotocoL/b":2}"#,
            r#"{"io.modelcontextprotocoL/b":2,"io.modelcontextprotocol/a":1}"#,
        ] {
            assert!(!reserved_only(meta), "{meta}");
        }
        // Not an object: nothing is reserved, and what follows still scans.
        assert!(!reserved_only("[]"));
        // Cut inside a reserved name, or just past its prefix: refused as
        // serde_json refuses it.
        for text in [
            r#"{"params":{"_meta":{"io.modelcontextprotocol/"#,
            r#"{"params":{"_meta":{"io.modelcontextprotocol/a"#,
            r#"{"params":{"_meta":{"io.modelcontextprotocol/a":"#,
            r#"{"params":{"_meta":{"io.modelcontextprotocol/\"#,
            r#"{"params":{"_meta":{"io.modelcontextprotocol/\u00"#,
            r#"{"params":{"_meta":{"io.modelcontextprotocol"#,
        ] {
            assert!(envelope(text).is_none(), "{text}");
            assert!(serde_envelope(text).is_err(), "{text}");
        }
    }

    #[test]
    fn the_word_scan_finds_the_first_special_byte_at_any_offset() {
        for len in 0..40 {
            for at in 0..len {
                for c in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                    // Bytes the word trick could mistake: one above and one
                    // below each target, and high bytes.
                    let mut text: Vec<u8> = (0..len)
                        .map(|i| [b'#', b'!', b']', b'[', 0x20, 0x7f, 0xc3, 0xa9, b'a'][i % 9])
                        .collect();
                    text[at] = c;
                    if at + 1 < len {
                        text[at + 1] = b'"';
                    }
                    for from in 0..=at {
                        assert_eq!(special(&text, from), Some(at), "{len} {at} {c}");
                    }
                }
            }
            let plain = vec![b'a'; len];
            assert_eq!(special(&plain, 0), None);
        }
        assert_eq!(special(b"ab", 5), None);
    }

    #[test]
    fn method_and_result_are_noted_on_the_way() {
        let plain = envelope(r#"{"method":"tools/call","id":1}"#).unwrap();
        assert!(plain.method_plain);
        let escaped = envelope(r#"{"method":"tools\/call","id":1}"#).unwrap();
        assert!(!escaped.method_plain);
        assert_eq!(escaped.method().as_deref(), Some("tools/call"));
        let not_string = envelope(r#"{"method":7}"#).unwrap();
        assert!(!not_string.method_plain);
        for (text, unstamped) in [
            (
                r#"{"id":1,"result":{"content":[{"text":"a\n\"resultType\""}]}}"#,
                true,
            ),
            (r#"{"id":1,"result":{}}"#, true),
            (r#"{"id":1,"result":{"ttlMs":5}}"#, false),
            (r#"{"id":1,"result":{"c":1,"cacheScope":"x"}}"#, false),
            (r#"{"id":1,"result":{"result\u0054ype":"x"}}"#, false),
            (r#"{"id":1,"result":[1]}"#, false),
            (r#"{"id":1,"result":7}"#, false),
        ] {
            assert_eq!(
                envelope(text).unwrap().result_unstamped,
                unstamped,
                "{text}"
            );
        }
    }

    #[test]
    fn what_it_leaves_to_serde_json() {
        // Escaped top-level names are decoded by serde_json.
        assert!(envelope(r#"{"\u0069d":1}"#).is_none());
        assert_eq!(
            serde_envelope(r#"{"\u0069d":1}"#)
                .unwrap()
                .id
                .map(|r| r.get()),
            Some("1")
        );
        // Deeper than MAX_DEPTH is left to serde_json, at the limit read
        // here (the innermost `[]`, empty, opens no level to track).
        for (arrays, read_here) in [(MAX_DEPTH + 2, false), (MAX_DEPTH + 1, true)] {
            let text = format!(
                r#"{{"params":{}{}}}"#,
                "[".repeat(arrays),
                "]".repeat(arrays)
            );
            assert_eq!(envelope(&text).is_some(), read_here, "{arrays} arrays");
            agrees(&text);
        }
    }

    #[test]
    fn invalid_json_is_refused_as_serde_json_refuses_it() {
        let cases = [
            "",
            "  ",
            "[]",
            "1",
            r#""s""#,
            "{",
            "}",
            r#"{"id":1,}"#,
            r#"{,"id":1}"#,
            r#"{"id" 1}"#,
            r#"{"id":}"#,
            r#"{"id":1 "method":"m"}"#,
            r#"{"id":01}"#,
            r#"{"id":-}"#,
            r#"{"id":1.}"#,
            r#"{"id":.5}"#,
            r#"{"id":1e}"#,
            r#"{"id":1e+}"#,
            r#"{"id":+1}"#,
            r#"{"id":tru}"#,
            r#"{"id":nulll}"#,
            r#"{"id":True}"#,
            r#"{"params":[1,]}"#,
            r#"{"params":[,1]}"#,
            r#"{"params":{"a":1,}}"#,
            r#"{"params":{1:2}}"#,
            r#"{"params":[1}"#,
            r#"{"params":{"a":1]}"#,
            r#"{"params":"\x"}"#,
            r#"{"params":"\u12"}"#,
            r#"{"params":"\u12g4"}"#,
            "{\"params\":\"a\u{1}b\"}",
            "{\"params\":\"tab\there\"}",
            r#"{"params":"unterminated}"#,
            // What the escaped part of a string can still get wrong.
            "{\"params\":\"a\\n\u{1}\"}",
            r#"{"params":"a\n"#,
            r#"{"params":"\"}"#,
            r#"{"params":"\n\q"}"#,
            r#"{"id":1} x"#,
            r#"{"id":1}{}"#,
            "{\"id\":1}\u{b}",
            "\u{c}{\"id\":1}",
        ];
        for text in cases {
            assert!(envelope(text).is_none(), "accepted: {text:?}");
            assert!(serde_envelope(text).is_err(), "serde_json accepts {text:?}");
        }
    }

    #[test]
    fn every_cut_of_a_message_agrees_with_serde_json() {
        let text = r#"{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"e","arguments":{"t":"a\"\u00e9","n":[1.5e-3,-0,true,null]},"_meta":{"k":{}}}}"#;
        for cut in 0..=text.len() {
            if let Some(t) = text.get(..cut) {
                agrees(t);
            }
            if let Some(t) = text.get(cut..) {
                agrees(t);
            }
        }
        // Each byte replaced by each of the bytes JSON gives a meaning.
        for at in 0..text.len() {
            for c in b" \t\"\\{}[]:,-+.0123456789eEtfnu/x\x01" {
                let mut b = text.as_bytes().to_vec();
                b[at] = *c;
                if let Ok(t) = std::str::from_utf8(&b) {
                    agrees(t);
                }
            }
        }
    }
}
