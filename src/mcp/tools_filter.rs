//! Tool filtering (`--allow-tool`, `--deny-tool`, `"tools"` in `--config`):
//! which of an upstream's tools a client may see and call.
//!
//! Sans-I/O: the fronts hand over a client message before it goes up
//! ([`ToolFilter::inspect`]) and the reply to a `tools/list` before it goes
//! down ([`ToolFilter::filter_list_reply`]); nothing here touches a socket,
//! the clock or the log.
//!
//! - **Names** are matched against globs: `*` (any run of characters, none
//!   included), `?` (one character), `[abc]`, `[a-z]`, `[!a-z]` / `[^a-z]`
//!   (one character of, or not of, a set), `\x` (`x` literally). Matching is
//!   case-sensitive and whole-name.
//! - **Allow** (empty: every tool) then **deny** (deny wins): a tool is
//!   visible and callable when some allow glob matches it (or there is none)
//!   and no deny glob does.
//! - **Fail closed.** With a filter set, a `tools/call` whose tool cannot be
//!   read without doubt (no `params.name` string, a member given twice, a
//!   name over [`MAX_TOOL_NAME`] bytes) is denied; a listed tool without a
//!   readable name is hidden; a `tools/list` reply whose `result` or `tools`
//!   is given twice is unreadable (the front answers `invalid_reply`). JSON
//!   parsers disagree on duplicate members (first or last wins), so the
//!   relay never forwards a message on which its reading could differ from
//!   the server's or the client's.
//! - **Byte-faithful.** A `tools/list` reply with nothing hidden is passed as
//!   it is; otherwise only the `tools` array is rebuilt, from the kept
//!   elements' own bytes, and every byte around it is kept.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Longest glob accepted, in characters.
pub const MAX_GLOB: usize = 256;
/// Globs accepted per list (allow or deny) of one upstream.
pub const MAX_GLOBS: usize = 256;
/// A tool name longer than this (bytes) is neither listed nor callable
/// through a filter: matching it would cost more than any real name needs
/// (MCP names are 1–128 characters).
pub const MAX_TOOL_NAME: usize = 1024;
/// At most this many characters of a denied name are quoted back.
const QUOTED_NAME: usize = 128;

/// One element of a compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `?`
    One,
    /// `*`
    Star,
    /// `[...]`: ranges (inclusive), negated with `!` or `^`.
    Class {
        neg: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled glob.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    toks: Vec<Tok>,
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl Glob {
    /// Compiles `text`; an error says what is wrong with it.
    pub fn new(text: &str) -> Result<Glob, String> {
        if text.is_empty() {
            return Err("an empty tool glob matches nothing".into());
        }
        if text.chars().count() > MAX_GLOB {
            return Err(format!("tool glob longer than {MAX_GLOB} characters"));
        }
        let mut toks = Vec::new();
        let mut it = text.chars().peekable();
        while let Some(c) = it.next() {
            let tok = match c {
                '*' => {
                    if toks.last() == Some(&Tok::Star) {
                        continue;
                    }
                    Tok::Star
                }
                '?' => Tok::One,
                '\\' => Tok::Lit(
                    it.next()
                        .ok_or_else(|| format!("tool glob {text:?} ends with a lone \\"))?,
                ),
                '[' => {
                    let neg = matches!(it.peek(), Some('!' | '^'));
                    if neg {
                        it.next();
                    }
                    let mut ranges = Vec::new();
                    let mut first = true;
                    loop {
                        let Some(mut lo) = it.next() else {
                            return Err(format!("tool glob {text:?}: [ without a closing ]"));
                        };
                        // `]` right after `[` (or `[!`) is a member, as in fnmatch.
                        if lo == ']' && !first {
                            break;
                        }
                        first = false;
                        if lo == '\\' {
                            lo = it.next().ok_or_else(|| {
                                format!("tool glob {text:?}: [ without a closing ]")
                            })?;
                        }
                        let mut hi = lo;
                        if it.peek() == Some(&'-') {
                            let mut ahead = it.clone();
                            ahead.next();
                            match ahead.peek() {
                                Some(']') | None => {}
                                Some(_) => {
                                    it.next();
                                    hi = it.next().unwrap_or(lo);
                                    if hi == '\\' {
                                        hi = it.next().ok_or_else(|| {
                                            format!("tool glob {text:?}: [ without a closing ]")
                                        })?;
                                    }
                                    if hi < lo {
                                        return Err(format!(
                                            "tool glob {text:?}: range {lo}-{hi} is backwards"
                                        ));
                                    }
                                }
                            }
                        }
                        ranges.push((lo, hi));
                    }
                    Tok::Class { neg, ranges }
                }
                c => Tok::Lit(c),
            };
            toks.push(tok);
        }
        Ok(Glob {
            text: text.to_owned(),
            toks,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the whole of `name` matches. Linear in the name per star
    /// restart (one backtrack point: the last star), so at most
    /// `name × glob` steps.
    pub fn matches(&self, name: &str) -> bool {
        self.matches_chars(&name.chars().collect::<Vec<char>>())
    }

    fn matches_chars(&self, name: &[char]) -> bool {
        let pat = &self.toks;
        let (mut p, mut n) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            let c = name[n];
            let step = match pat.get(p) {
                Some(Tok::Lit(l)) => *l == c,
                Some(Tok::One) => true,
                Some(Tok::Class { neg, ranges }) => {
                    ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *neg
                }
                Some(Tok::Star) => {
                    star = Some((p, n));
                    p += 1;
                    continue;
                }
                None => false,
            };
            if step {
                p += 1;
                n += 1;
            } else if let Some((sp, sn)) = star {
                // The last star takes one more character.
                p = sp + 1;
                n = sn + 1;
                star = Some((sp, sn + 1));
            } else {
                return false;
            }
        }
        pat.get(p..)
            .unwrap_or_default()
            .iter()
            .all(|t| *t == Tok::Star)
    }
}

/// One upstream's tool filter. The default (no globs) lets everything
/// through and costs nothing: the fronts check [`ToolFilter::is_active`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolFilter {
    allow: Vec<Glob>,
    deny: Vec<Glob>,
}

/// What to do with a client message on its way up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it.
    Pass,
    /// A `tools/list`: forward it, and filter its reply.
    List,
    /// A `tools/call` that must not reach the server.
    Deny(Denied),
}

/// Why a `tools/call` was denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The tool's name when it could be read (cut to 128 characters).
    pub tool: Option<String>,
    /// For the client's error message and the log.
    pub reason: &'static str,
}

impl Denied {
    /// The error message for the client.
    pub fn message(&self) -> String {
        match &self.tool {
            Some(t) => format!("Tool {t:?} {}", self.reason),
            None => format!("tools/call {}", self.reason),
        }
    }
}

const NOT_ALLOWED: &str = "is not allowed by the relay's tool filter";

/// The reply to a `tools/list`, after filtering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListReply {
    /// Nothing hidden (or nothing to filter): pass the reply as it is.
    Unchanged,
    /// Some tools hidden: pass these bytes instead; `hidden` were removed.
    Rewritten { bytes: Vec<u8>, hidden: usize },
    /// A reply that cannot be filtered without doubt (a member given
    /// twice): answer the request with `invalid_reply` instead.
    Unreadable,
}

impl ToolFilter {
    /// Compiles the lists; an error names the bad glob.
    pub fn new(allow: &[String], deny: &[String]) -> Result<ToolFilter, String> {
        let compile = |list: &[String], what: &str| -> Result<Vec<Glob>, String> {
            if list.len() > MAX_GLOBS {
                return Err(format!("more than {MAX_GLOBS} {what} globs"));
            }
            list.iter().map(|g| Glob::new(g)).collect()
        };
        Ok(ToolFilter {
            allow: compile(allow, "allow")?,
            deny: compile(deny, "deny")?,
        })
    }

    /// False for the default filter, which lets everything through.
    pub fn is_active(&self) -> bool {
        !self.allow.is_empty() || !self.deny.is_empty()
    }

    pub fn allow(&self) -> &[Glob] {
        &self.allow
    }

    pub fn deny(&self) -> &[Glob] {
        &self.deny
    }

    /// Whether tool `name` is visible and callable.
    pub fn allows(&self, name: &str) -> bool {
        if !self.is_active() {
            return true;
        }
        if name.len() > MAX_TOOL_NAME {
            return false;
        }
        let name: Vec<char> = name.chars().collect();
        (self.allow.is_empty() || self.allow.iter().any(|g| g.matches_chars(&name)))
            && !self.deny.iter().any(|g| g.matches_chars(&name))
    }

    /// Looks at one client message (a request or notification, not a
    /// batch) on its way to the upstream.
    pub fn inspect(&self, msg: &[u8]) -> Verdict {
        if !self.is_active() {
            return Verdict::Pass;
        }
        let deny = |tool: Option<String>, reason| Verdict::Deny(Denied { tool, reason });
        let Ok(text) = std::str::from_utf8(msg) else {
            return deny(None, "cannot be read (not UTF-8)");
        };
        let Ok([method, params]) = members(text, ["method", "params"]) else {
            return deny(None, "cannot be checked: a member is given twice");
        };
        let method = method.and_then(|m| serde_json::from_str::<String>(m.get()).ok());
        match method.as_deref() {
            Some("tools/list") => return Verdict::List,
            Some("tools/call") => {}
            _ => return Verdict::Pass,
        }
        let Some(params) = params else {
            return deny(
                None,
                "without params.name is refused by the relay's tool filter",
            );
        };
        let name = match members(params.get(), ["name"]) {
            Ok([Some(n)]) => serde_json::from_str::<String>(n.get()).ok(),
            Ok([None]) => None,
            Err(_) => {
                return deny(
                    None,
                    "cannot be checked by the relay's tool filter: params or params.name is \
                     malformed or given twice",
                );
            }
        };
        let Some(name) = name else {
            return deny(
                None,
                "without a string params.name is refused by the relay's tool filter",
            );
        };
        if self.allows(&name) {
            Verdict::Pass
        } else {
            deny(Some(name.chars().take(QUOTED_NAME).collect()), NOT_ALLOWED)
        }
    }

    /// Filters the reply to a `tools/list`: tools not allowed are removed
    /// from `result.tools`.
    pub fn filter_list_reply(&self, reply: &[u8]) -> ListReply {
        if !self.is_active() {
            return ListReply::Unchanged;
        }
        let Ok(text) = std::str::from_utf8(reply) else {
            return ListReply::Unreadable;
        };
        let Ok([result, error]) = members(text, ["result", "error"]) else {
            return ListReply::Unreadable;
        };
        let Some(result) = result else {
            // An error reply lists nothing.
            return ListReply::Unchanged;
        };
        if error.is_some() {
            return ListReply::Unreadable;
        }
        if !result.get().starts_with('{') {
            return ListReply::Unchanged;
        }
        let Ok([tools]) = members(result.get(), ["tools"]) else {
            return ListReply::Unreadable;
        };
        let Some(tools) = tools.filter(|t| t.get().starts_with('[')) else {
            return ListReply::Unchanged;
        };
        let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(tools.get()) else {
            return ListReply::Unreadable;
        };
        let kept: Vec<&str> = items
            .iter()
            .filter(|t| self.tool_entry_allowed(t))
            .map(|t| t.get())
            .collect();
        if kept.len() == items.len() {
            return ListReply::Unchanged;
        }
        // `tools` borrows from `text`: its offset is where it sits in it.
        let start = (tools.get().as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
        let end = start.saturating_add(tools.get().len());
        let (Some(head), Some(tail)) = (text.get(..start), text.get(end..)) else {
            return ListReply::Unreadable;
        };
        let mut bytes = Vec::with_capacity(reply.len());
        bytes.extend_from_slice(head.as_bytes());
        bytes.push(b'[');
        for (i, t) in kept.iter().enumerate() {
            if i > 0 {
                bytes.push(b',');
            }
            bytes.extend_from_slice(t.as_bytes());
        }
        bytes.push(b']');
        bytes.extend_from_slice(tail.as_bytes());
        ListReply::Rewritten {
            bytes,
            hidden: items.len() - kept.len(),
        }
    }

    /// A listed tool is kept when its one `name` is an allowed string.
    fn tool_entry_allowed(&self, entry: &RawValue) -> bool {
        match members(entry.get(), ["name"]) {
            Ok([Some(n)]) => serde_json::from_str::<String>(n.get())
                .ok()
                .is_some_and(|name| self.allows(&name)),
            _ => false,
        }
    }
}

/// The members named `keys` of the JSON object `text`, as raw text
/// borrowed from it. An error when `text` is not an object, or when one of
/// `keys` appears twice (keys are compared after unescaping).
fn members<'a, const N: usize>(
    text: &'a str,
    keys: [&str; N],
) -> Result<[Option<&'a RawValue>; N], serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let out = Pick { keys: &keys }.deserialize(&mut de)?;
    de.end()?;
    Ok(out)
}

struct Pick<'k, const N: usize> {
    keys: &'k [&'k str; N],
}

impl<'de, const N: usize> DeserializeSeed<'de> for Pick<'_, N> {
    type Value = [Option<&'de RawValue>; N];
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for Pick<'_, N> {
    type Value = [Option<&'de RawValue>; N];
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = [None; N];
        while let Some(idx) = map.next_key_seed(KeyIdx { keys: self.keys })? {
            match idx.and_then(|i| out.get_mut(i)) {
                Some(slot) => {
                    if slot.is_some() {
                        return Err(de::Error::custom("duplicate member"));
                    }
                    *slot = Some(map.next_value::<&'de RawValue>()?);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// A member name → its index in `keys`, if it is one of them.
struct KeyIdx<'k, const N: usize> {
    keys: &'k [&'k str; N],
}

impl<'de, const N: usize> DeserializeSeed<'de> for KeyIdx<'_, N> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<const N: usize> Visitor<'_> for KeyIdx<'_, N> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.keys.iter().position(|k| *k == v))
    }
}

#[cfg(test)]
mod tests;
