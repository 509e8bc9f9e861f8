//! Many client sessions over one MCP server process ("shared" pool mode).
//!
//! The owner initializes the process once and answers each client's
//! `initialize` from the cached result (docs: MCP-TRANSPORTS.md, "What this
//! means for pooling stdio servers"). A `Mux`, one per process, then makes the
//! sessions' traffic look like one client's:
//!
//! - **up** (client → process): each request gets a fresh upstream id and, if
//!   it asked for progress, a fresh progress token; `notifications/cancelled`
//!   has its `requestId` rewritten to match; `notifications/initialized` is
//!   swallowed (the relay sent its own).
//! - **down** (process → client): replies get the client's id back and go to
//!   the session that asked; progress goes to the session that owns the token;
//!   server→client requests go to the one session with requests in flight;
//!   list-changed notifications go to every session.
//!
//! # Ids
//!
//! Upstream request ids are JSON integers ≥ 1 from one counter per process,
//! never reused while in flight. A request's upstream progress token is the
//! same integer as its upstream id (tokens and ids are separate namespaces in
//! MCP, and one counter keeps both unique). The relay's own requests on the
//! same process (its `initialize`, health pings) must use ids outside that
//! space, e.g. strings like forward mode's `"mcp-relay-replay-…"`, and the
//! owner must take their replies before calling [`Mux::down`], which drops
//! replies to ids it did not issue.
//!
//! # Byte fidelity
//!
//! Messages are not re-serialized. `peek` borrows every `RawValue` from the
//! input line, so a rewrite splices new bytes over exactly the id or token
//! value and copies everything else verbatim (key order, whitespace, number
//! spelling). Restored ids and tokens are the client's original text, so
//! `"abc"`, `7` and `1.5` come back byte for byte.
//!
//! # Memory
//!
//! Every entry is removed on reply, client cancel, `expire`, `end_session` or
//! `fail_all`. Server→client requests are remembered until the session
//! answers, the server cancels them, or the session ends.

use std::collections::HashMap;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::json;
use serde_json::value::RawValue;

use crate::proto::errors::RelayError;
use crate::proto::jsonrpc::{self, Envelope, Id, Kind, Message};

/// Identifies a client session; assigned by the owner.
pub type SessionKey = u64;

/// Code of the error the relay answers a server→client request with when it
/// cannot tell which session it is for. -32603 (internal error) rather than
/// -32601: the method may well exist on the clients, the relay just cannot
/// pick one.
pub const UNROUTABLE_CODE: i64 = -32603;
/// `data.kind` of that error.
pub const UNROUTABLE_KIND: &str = "unroutable_in_shared_mode";
/// Code of the error the relay answers a server→client request with when the
/// session it went to ends without answering: -32000 is what the MCP SDKs use
/// for "connection closed".
pub const SESSION_ENDED_CODE: i64 = -32000;
/// `data.kind` of that error.
pub const SESSION_ENDED_KIND: &str = "session_ended";

/// What to do with a message from a client session.
#[derive(Debug, PartialEq)]
pub enum Up {
    /// Write these bytes to the process.
    Send(Vec<u8>),
    /// Swallow the message (e.g. `notifications/initialized`, a cancel for a
    /// request already answered, a reply nobody asked this session for).
    Drop,
    /// Do not forward; answer the client with this JSON-RPC error instead.
    Reject(Vec<u8>),
}

/// Where a message from the process goes.
#[derive(Debug, PartialEq)]
pub enum Down {
    /// The reply to a client request, with the client's id restored.
    Reply {
        session: SessionKey,
        id: Id,
        msg: Vec<u8>,
    },
    /// Progress (token restored), a server→client request, or the server's
    /// cancellation of its own request.
    ToSession { session: SessionKey, msg: Vec<u8> },
    /// To every session on this process.
    Broadcast { msg: Vec<u8> },
    /// Back to the process: the relay answers it (ping, unroutable request).
    ToUpstream { msg: Vec<u8> },
    /// Nowhere: a late reply, unknown progress, or not a JSON-RPC message.
    Drop,
}

/// A client request in flight, keyed by its upstream id.
struct Pending {
    session: SessionKey,
    /// The client's id, normalised (for `Down::Reply` and `fail_all`).
    id: Id,
    /// The client's id exactly as written, restored on the reply.
    id_text: Box<str>,
    /// The client's progress token exactly as written, if it asked for progress.
    token: Option<Box<str>>,
    /// False for `initialize`, which MCP forbids cancelling.
    cancellable: bool,
}

/// Rewrites and routes the traffic of many sessions sharing one process.
pub struct Mux {
    /// The next upstream id to try.
    next: i64,
    /// Upstream id → the client request it stands for.
    pending: HashMap<i64, Pending>,
    /// Session → its in-flight requests (client id → upstream id). A session
    /// is present only while it has at least one, so `len()` is the number of
    /// sessions with requests in flight.
    sessions: HashMap<SessionKey, HashMap<Id, i64>>,
    /// Server→client request id → the session it was routed to.
    server_requests: HashMap<Id, SessionKey>,
}

impl Default for Mux {
    fn default() -> Self {
        Mux::new()
    }
}

impl Mux {
    pub fn new() -> Mux {
        Mux {
            next: 1,
            pending: HashMap::new(),
            sessions: HashMap::new(),
            server_requests: HashMap::new(),
        }
    }

    /// A message from a client session: one JSON-RPC message, not a batch
    /// (the owner splits batches).
    pub fn up(&mut self, session: SessionKey, line: &[u8]) -> Up {
        let env = match jsonrpc::peek(line) {
            Ok(Message::Single(env)) => env,
            Ok(Message::Batch(_)) => {
                return Up::Reject(relay_error(
                    None,
                    RelayError::InvalidRequest,
                    "Invalid Request: batches must be split before the shared mux",
                ));
            }
            Err(_) => {
                return Up::Reject(relay_error(None, RelayError::ParseError, "Parse error"));
            }
        };
        match env.kind() {
            Kind::Request => self.up_request(session, line, &env),
            Kind::Notification => self.up_notification(session, line, &env),
            Kind::Response => self.up_response(session, &env, line),
            Kind::Invalid => Up::Reject(relay_error(
                env.id().as_ref(),
                RelayError::InvalidRequest,
                "Invalid Request",
            )),
        }
    }

    fn up_request(&mut self, session: SessionKey, line: &[u8], env: &Envelope) -> Up {
        let Some(raw_id) = env.id else {
            return Up::Reject(relay_error(
                None,
                RelayError::InvalidRequest,
                "Invalid Request",
            ));
        };
        let id = Id::from_raw(raw_id);
        if self
            .sessions
            .get(&session)
            .is_some_and(|reqs| reqs.contains_key(&id))
        {
            return Up::Reject(relay_error(
                Some(&id),
                RelayError::DuplicateId,
                "Invalid Request: a request with this id is already in flight",
            ));
        }
        let token = env.params.and_then(progress_token_in_request);
        let n = self.fresh_id();
        let upstream = n.to_string();
        let mut edits = vec![(raw_id, upstream.as_bytes())];
        if let Some(t) = token {
            edits.push((t, upstream.as_bytes()));
        }
        let Some(msg) = splice(line, &mut edits) else {
            return Up::Reject(relay_error(
                Some(&id),
                RelayError::InvalidRequest,
                "Invalid Request",
            ));
        };
        self.pending.insert(
            n,
            Pending {
                session,
                id: id.clone(),
                id_text: raw_id.get().into(),
                token: token.map(|t| t.get().into()),
                // MCP lifecycle: `initialize` cannot be cancelled.
                cancellable: !env.method_is("initialize"),
            },
        );
        self.sessions.entry(session).or_default().insert(id, n);
        Up::Send(msg)
    }

    fn up_notification(&mut self, session: SessionKey, line: &[u8], env: &Envelope) -> Up {
        match env.method().as_deref() {
            // The relay sent its own when it initialized the process.
            Some("notifications/initialized") => Up::Drop,
            Some("notifications/cancelled") => self.up_cancelled(session, line, env),
            // Including client progress on server→client requests: those
            // tokens are the server's own and were never rewritten.
            _ => Up::Send(line.to_vec()),
        }
    }

    fn up_cancelled(&mut self, session: SessionKey, line: &[u8], env: &Envelope) -> Up {
        let Some(raw) = env.params.and_then(|p| member(p, "requestId")) else {
            return Up::Drop;
        };
        let id = Id::from_raw(raw);
        let Some(&n) = self.sessions.get(&session).and_then(|reqs| reqs.get(&id)) else {
            // Already answered (or never sent): nothing to cancel upstream.
            return Up::Drop;
        };
        if !self.pending.get(&n).is_some_and(|p| p.cancellable) {
            // MCP: `initialize` cannot be cancelled; its reply still comes.
            return Up::Drop;
        }
        let upstream = n.to_string();
        let Some(msg) = splice(line, &mut [(raw, upstream.as_bytes())]) else {
            return Up::Drop;
        };
        // MCP Cancellation: a late reply to a cancelled request is ignored.
        self.forget(n);
        Up::Send(msg)
    }

    fn up_response(&mut self, session: SessionKey, env: &Envelope, line: &[u8]) -> Up {
        let Some(id) = env.id() else {
            return Up::Drop;
        };
        if self.server_requests.get(&id) == Some(&session) {
            self.server_requests.remove(&id);
            Up::Send(line.to_vec())
        } else {
            Up::Drop
        }
    }

    /// A line from the process. Returns one `Down` per message: one for a
    /// single message, one per element for a batch (none for an empty batch).
    pub fn down(&mut self, line: &[u8]) -> Vec<Down> {
        match jsonrpc::peek(line) {
            Ok(Message::Single(env)) => vec![self.down_one(line, &env)],
            Ok(Message::Batch(items)) => items
                .iter()
                .map(|raw| match jsonrpc::peek_raw(raw) {
                    Some(env) => self.down_one(raw.get().as_bytes(), &env),
                    None => Down::Drop,
                })
                .collect(),
            Err(_) => vec![Down::Drop],
        }
    }

    /// `base` is the message's own bytes; `env` borrows from it.
    fn down_one(&mut self, base: &[u8], env: &Envelope) -> Down {
        match env.kind() {
            Kind::Response => self.down_response(base, env),
            Kind::Notification => self.down_notification(base, env),
            Kind::Request => self.down_request(base, env),
            Kind::Invalid => Down::Drop,
        }
    }

    fn down_response(&mut self, base: &[u8], env: &Envelope) -> Down {
        let Some(raw) = env.id else {
            return Down::Drop;
        };
        let Id::Num(n) = Id::from_raw(raw) else {
            return Down::Drop;
        };
        let Some(p) = self.pending.get(&n) else {
            // Late: cancelled, expired, or its session ended.
            return Down::Drop;
        };
        let Some(msg) = splice(base, &mut [(raw, p.id_text.as_bytes())]) else {
            return Down::Drop;
        };
        match self.forget(n) {
            Some(p) => Down::Reply {
                session: p.session,
                id: p.id,
                msg,
            },
            None => Down::Drop,
        }
    }

    fn down_notification(&mut self, base: &[u8], env: &Envelope) -> Down {
        let Some(method) = env.method() else {
            return Down::Drop;
        };
        match &*method {
            "notifications/progress" => self.down_progress(base, env),
            "notifications/cancelled" => {
                // The server withdrawing a request it sent to a client.
                let id = env.params.and_then(|p| member(p, "requestId"));
                match id.and_then(|raw| self.server_requests.remove(&Id::from_raw(raw))) {
                    Some(session) => Down::ToSession {
                        session,
                        msg: base.to_vec(),
                    },
                    None => Down::Drop,
                }
            }
            // Every session sees the same tools, prompts and resources.
            // (Resource subscriptions are per process in shared mode, so
            // `resources/updated` goes to everyone too.)
            m if m == "notifications/resources/updated"
                || (m.starts_with("notifications/") && m.ends_with("/list_changed")) =>
            {
                Down::Broadcast { msg: base.to_vec() }
            }
            // Logging and anything else: most likely about the request in
            // flight, if there is exactly one session with any.
            _ => match self.sole_session() {
                Some(session) => Down::ToSession {
                    session,
                    msg: base.to_vec(),
                },
                None => Down::Broadcast { msg: base.to_vec() },
            },
        }
    }

    fn down_progress(&mut self, base: &[u8], env: &Envelope) -> Down {
        let Some(raw) = env.params.and_then(|p| member(p, "progressToken")) else {
            return Down::Drop;
        };
        let Id::Num(n) = Id::from_raw(raw) else {
            return Down::Drop;
        };
        let Some(p) = self.pending.get(&n) else {
            return Down::Drop;
        };
        let Some(token) = &p.token else {
            // That request did not ask for progress.
            return Down::Drop;
        };
        match splice(base, &mut [(raw, token.as_bytes())]) {
            Some(msg) => Down::ToSession {
                session: p.session,
                msg,
            },
            None => Down::Drop,
        }
    }

    fn down_request(&mut self, base: &[u8], env: &Envelope) -> Down {
        let Some(raw) = env.id else {
            return Down::Drop;
        };
        if env.method_is("ping") {
            // MCP: ping must be answered promptly; the relay is alive, so it
            // answers rather than pick a session.
            let msg = format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{{}}}}",
                raw.get()
            );
            return Down::ToUpstream {
                msg: msg.into_bytes(),
            };
        }
        let id = Id::from_raw(raw);
        match self.sole_session() {
            Some(session) => {
                self.server_requests.insert(id, session);
                Down::ToSession {
                    session,
                    msg: base.to_vec(),
                }
            }
            None => {
                let busy = self.sessions.len();
                let message = format!(
                    "mcp-relay: cannot route a server-to-client request in shared pool mode \
                     ({busy} sessions have requests in flight; exactly one is needed)"
                );
                Down::ToUpstream {
                    msg: jsonrpc::error_response(
                        Some(&id),
                        UNROUTABLE_CODE,
                        &message,
                        json!({"kind": UNROUTABLE_KIND, "sessions": busy}),
                    ),
                }
            }
        }
    }

    /// The session ended: forgets its state and returns what to send the
    /// process, in order: `notifications/cancelled` for each of its in-flight
    /// requests (except `initialize`), then an error reply
    /// ([`SESSION_ENDED_CODE`]) to each server→client request it had not
    /// answered, so the server does not wait forever.
    pub fn end_session(&mut self, session: SessionKey) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if let Some(reqs) = self.sessions.remove(&session) {
            let mut ns: Vec<i64> = reqs.into_values().collect();
            ns.sort_unstable();
            for n in ns {
                if self.pending.remove(&n).is_some_and(|p| p.cancellable) {
                    out.push(jsonrpc::cancelled(
                        &Id::Num(n),
                        "mcp-relay: client session ended",
                    ));
                }
            }
        }
        let mut orphans: Vec<Id> = self
            .server_requests
            .iter()
            .filter(|&(_, s)| *s == session)
            .map(|(id, _)| id.clone())
            .collect();
        orphans.sort_by_cached_key(Id::to_json);
        for id in orphans {
            self.server_requests.remove(&id);
            out.push(jsonrpc::error_response(
                Some(&id),
                SESSION_ENDED_CODE,
                "mcp-relay: the client session ended before answering",
                json!({"kind": SESSION_ENDED_KIND}),
            ));
        }
        out
    }

    /// The process died: forgets everything and returns every in-flight
    /// client request (in the order they were sent), for the owner to answer
    /// with an error.
    pub fn fail_all(&mut self) -> Vec<(SessionKey, Id)> {
        let mut all: Vec<(i64, Pending)> = self.pending.drain().collect();
        all.sort_unstable_by_key(|(n, _)| *n);
        self.sessions.clear();
        self.server_requests.clear();
        all.into_iter().map(|(_, p)| (p.session, p.id)).collect()
    }

    /// A request timed out in the owner: forgets it (its late reply will be
    /// dropped) and returns the `notifications/cancelled` to send the
    /// process. `None` if the request is unknown or was `initialize`.
    pub fn expire(&mut self, session: SessionKey, id: &Id) -> Option<Vec<u8>> {
        let n = *self.sessions.get(&session)?.get(id)?;
        let p = self.forget(n)?;
        p.cancellable
            .then(|| jsonrpc::cancelled(&Id::Num(n), "mcp-relay: response timeout"))
    }

    /// Client requests in flight on this process.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Client requests in flight for one session.
    pub fn in_flight_for(&self, session: SessionKey) -> usize {
        self.sessions.get(&session).map_or(0, HashMap::len)
    }

    /// Server→client requests routed to a session and not yet answered.
    pub fn server_requests_in_flight(&self) -> usize {
        self.server_requests.len()
    }

    /// The only session with requests in flight, if exactly one has any.
    fn sole_session(&self) -> Option<SessionKey> {
        if self.sessions.len() == 1 {
            self.sessions.keys().next().copied()
        } else {
            None
        }
    }

    /// A fresh upstream id, ≥ 1 and not in flight.
    fn fresh_id(&mut self) -> i64 {
        loop {
            let n = self.next;
            self.next = if n == i64::MAX { 1 } else { n + 1 };
            if !self.pending.contains_key(&n) {
                return n;
            }
        }
    }

    /// Removes a request from both maps, dropping its session's entry when
    /// that was its last.
    fn forget(&mut self, n: i64) -> Option<Pending> {
        let p = self.pending.remove(&n)?;
        if let Some(reqs) = self.sessions.get_mut(&p.session) {
            reqs.remove(&p.id);
            if reqs.is_empty() {
                self.sessions.remove(&p.session);
            }
        }
        Some(p)
    }
}

fn relay_error(id: Option<&Id>, err: RelayError, message: &str) -> Vec<u8> {
    jsonrpc::error_response(id, err.code(), message, json!({"kind": err.kind()}))
}

/// `params._meta.progressToken` of a request, if it is a string or an integer
/// (the types MCP allows; anything else is left alone and never routed).
fn progress_token_in_request(params: &RawValue) -> Option<&RawValue> {
    // Cheap prefilter. A name can be spelled with escapes
    // (`"progress\u0054oken"`), and a token that slipped through unrewritten
    // could collide with another session's, so any backslash means "look".
    let bytes = params.get().as_bytes();
    if memchr::memmem::find(bytes, b"progressToken").is_none()
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
fn splice(base: &[u8], edits: &mut [(&RawValue, &[u8])]) -> Option<Vec<u8>> {
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
fn member<'a>(obj: &'a RawValue, key: &str) -> Option<&'a RawValue> {
    let text = obj.get();
    if !text.starts_with('{') {
        return None;
    }
    let mut de = serde_json::Deserializer::from_str(text);
    Member(key).deserialize(&mut de).ok().flatten()
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn sent(up: Up) -> String {
        match up {
            Up::Send(b) => String::from_utf8(b).expect("utf-8"),
            other => panic!("expected Send, got {other:?}"),
        }
    }

    fn one(mut downs: Vec<Down>) -> Down {
        assert_eq!(downs.len(), 1, "{downs:?}");
        downs.remove(0)
    }

    fn json(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("valid JSON")
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).expect("utf-8")
    }

    /// Upstream id the mux gave the request in `sent`.
    fn upstream_id(sent: &str) -> i64 {
        json(sent.as_bytes())["id"]
            .as_i64()
            .expect("numeric upstream id")
    }

    fn assert_empty(m: &Mux) {
        assert_eq!(m.in_flight(), 0);
        assert!(m.pending.is_empty());
        assert!(m.sessions.is_empty());
        assert!(m.server_requests.is_empty());
    }

    #[test]
    fn rewrites_only_the_id_bytes() {
        let mut m = Mux::new();
        let line = br#"{"jsonrpc":"2.0", "method":"tools/call","id" : "abc","params":{"name":"x","arguments":{"id":9}}}"#;
        let up = sent(m.up(1, line));
        assert_eq!(
            up,
            r#"{"jsonrpc":"2.0", "method":"tools/call","id" : 1,"params":{"name":"x","arguments":{"id":9}}}"#
        );
        let d = one(m.down(br#"{"result":{"content":[]},"jsonrpc":"2.0","id":1}"#));
        assert_eq!(
            d,
            Down::Reply {
                session: 1,
                id: Id::Str("abc".into()),
                msg: br#"{"result":{"content":[]},"jsonrpc":"2.0","id":"abc"}"#.to_vec()
            }
        );
        assert_empty(&m);
    }

    #[test]
    fn string_numeric_and_float_ids_come_back_exactly() {
        let mut m = Mux::new();
        for (s, id) in [(1, r#""abc""#), (2, "7"), (3, "1.5"), (4, r#""a\u0062""#)] {
            let line = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
            let up = sent(m.up(s, line.as_bytes()));
            let n = upstream_id(&up);
            let reply = format!(r#"{{"jsonrpc":"2.0","id":{n},"result":{{}}}}"#);
            match one(m.down(reply.as_bytes())) {
                Down::Reply { session, msg, .. } => {
                    assert_eq!(session, s);
                    assert_eq!(
                        text(&msg),
                        format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#)
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        assert_empty(&m);
    }

    #[test]
    fn two_sessions_with_the_same_id_get_their_own_replies() {
        let mut m = Mux::new();
        let a = upstream_id(&sent(
            m.up(10, br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
        ));
        let b = upstream_id(&sent(
            m.up(20, br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
        ));
        assert_ne!(a, b);
        assert_eq!(m.in_flight(), 2);
        assert_eq!(m.in_flight_for(10), 1);
        // Replies in the opposite order.
        let rb = one(
            m.down(format!(r#"{{"jsonrpc":"2.0","id":{b},"result":{{"who":"b"}}}}"#).as_bytes())
        );
        let ra = one(
            m.down(format!(r#"{{"jsonrpc":"2.0","id":{a},"result":{{"who":"a"}}}}"#).as_bytes())
        );
        assert_eq!(
            rb,
            Down::Reply {
                session: 20,
                id: Id::Num(1),
                msg: br#"{"jsonrpc":"2.0","id":1,"result":{"who":"b"}}"#.to_vec()
            }
        );
        assert_eq!(
            ra,
            Down::Reply {
                session: 10,
                id: Id::Num(1),
                msg: br#"{"jsonrpc":"2.0","id":1,"result":{"who":"a"}}"#.to_vec()
            }
        );
        assert_empty(&m);
    }

    #[test]
    fn duplicate_id_in_flight_is_rejected() {
        let mut m = Mux::new();
        sent(m.up(1, br#"{"jsonrpc":"2.0","id":"x","method":"a"}"#));
        let Up::Reject(err) = m.up(1, br#"{"jsonrpc":"2.0","id":"x","method":"b"}"#) else {
            panic!("expected Reject");
        };
        let v = json(&err);
        assert_eq!(v["id"], "x");
        assert_eq!(v["error"]["code"], -32600);
        assert_eq!(v["error"]["data"]["kind"], "duplicate_id");
        assert_eq!(m.in_flight(), 1);
        // Once answered the id is free again.
        m.down(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
        sent(m.up(1, br#"{"jsonrpc":"2.0","id":"x","method":"b"}"#));
    }

    #[test]
    fn progress_tokens_of_two_sessions_route_by_token() {
        let mut m = Mux::new();
        let req = br#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"_meta":{"progressToken":"t"},"name":"slow"}}"#;
        let a = sent(m.up(1, req));
        let b = sent(m.up(2, req));
        let (na, nb) = (upstream_id(&a), upstream_id(&b));
        assert_eq!(
            a,
            format!(
                r#"{{"jsonrpc":"2.0","id":{na},"method":"tools/call","params":{{"_meta":{{"progressToken":{na}}},"name":"slow"}}}}"#
            )
        );
        assert_eq!(json(b.as_bytes())["params"]["_meta"]["progressToken"], nb);
        for (n, session) in [(nb, 2), (na, 1)] {
            let p = format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":{n},"progress":1,"total":2}}}}"#
            );
            assert_eq!(
                one(m.down(p.as_bytes())),
                Down::ToSession {
                    session,
                    msg: br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1,"total":2}}"#.to_vec()
                }
            );
        }
        // Unknown token, or a token after the reply: dropped.
        let stray = br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":999,"progress":1}}"#;
        assert_eq!(one(m.down(stray)), Down::Drop);
        m.down(format!(r#"{{"jsonrpc":"2.0","id":{na},"result":{{}}}}"#).as_bytes());
        let late = format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":{na},"progress":2}}}}"#
        );
        assert_eq!(one(m.down(late.as_bytes())), Down::Drop);
    }

    #[test]
    fn progress_token_with_an_escaped_name_is_rewritten_too() {
        let mut m = Mux::new();
        let up = sent(m.up(
            1,
            br#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":{"progress\u0054oken":5}}}"#,
        ));
        assert_eq!(
            up,
            r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":{"progress\u0054oken":1}}}"#
        );
    }

    #[test]
    fn progress_for_a_request_without_a_token_is_dropped() {
        let mut m = Mux::new();
        let n = upstream_id(&sent(
            m.up(1, br#"{"jsonrpc":"2.0","id":1,"method":"m","params":{}}"#),
        ));
        let p = format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":{n},"progress":1}}}}"#
        );
        assert_eq!(one(m.down(p.as_bytes())), Down::Drop);
    }

    #[test]
    fn client_cancel_is_rewritten_and_the_late_reply_dropped() {
        let mut m = Mux::new();
        sent(m.up(1, br#"{"jsonrpc":"2.0","id":"r","method":"x"}"#));
        let n = upstream_id(&sent(
            m.up(2, br#"{"jsonrpc":"2.0","id":"r","method":"x"}"#),
        ));
        let cancel = br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"r","reason":"user"}}"#;
        assert_eq!(
            sent(m.up(2, cancel)),
            format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{n},"reason":"user"}}}}"#
            )
        );
        assert_eq!(m.in_flight_for(2), 0);
        assert_eq!(m.in_flight_for(1), 1);
        let late = format!(r#"{{"jsonrpc":"2.0","id":{n},"result":{{}}}}"#);
        assert_eq!(one(m.down(late.as_bytes())), Down::Drop);
        // Cancelling again, or something never sent: nothing goes upstream.
        assert_eq!(m.up(2, cancel), Up::Drop);
    }

    #[test]
    fn initialize_passes_through_but_cannot_be_cancelled_or_expired() {
        let mut m = Mux::new();
        let n = upstream_id(&sent(m.up(
            1,
            br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}"#,
        )));
        let cancel =
            br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":0}}"#;
        assert_eq!(m.up(1, cancel), Up::Drop);
        assert_eq!(m.in_flight(), 1);
        assert_eq!(m.expire(1, &Id::Num(0)), None);
        assert_empty(&m);
        let late = format!(r#"{{"jsonrpc":"2.0","id":{n},"result":{{}}}}"#);
        assert_eq!(one(m.down(late.as_bytes())), Down::Drop);
    }

    #[test]
    fn expire_cancels_upstream_and_drops_the_late_reply() {
        let mut m = Mux::new();
        let n = upstream_id(&sent(
            m.up(3, br#"{"jsonrpc":"2.0","id":"slow","method":"tools/call"}"#),
        ));
        let c = m.expire(3, &Id::Str("slow".into())).expect("cancellation");
        let v = json(&c);
        assert_eq!(v["method"], "notifications/cancelled");
        assert_eq!(v["params"]["requestId"], n);
        assert_eq!(m.expire(3, &Id::Str("slow".into())), None);
        let late = format!(r#"{{"jsonrpc":"2.0","id":{n},"result":{{}}}}"#);
        assert_eq!(one(m.down(late.as_bytes())), Down::Drop);
        assert_empty(&m);
    }

    #[test]
    fn initialized_is_swallowed_and_other_notifications_pass() {
        let mut m = Mux::new();
        assert_eq!(
            m.up(
                1,
                br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#
            ),
            Up::Drop
        );
        let roots = br#"{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}"#;
        assert_eq!(m.up(1, roots), Up::Send(roots.to_vec()));
        let progress = br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"srv-1","progress":1}}"#;
        assert_eq!(m.up(1, progress), Up::Send(progress.to_vec()));
    }

    #[test]
    fn server_request_goes_to_the_one_busy_session_and_its_answer_back() {
        let mut m = Mux::new();
        sent(m.up(7, br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#));
        let sampling =
            br#"{"jsonrpc":"2.0","id":"srv-1","method":"sampling/createMessage","params":{}}"#;
        assert_eq!(
            one(m.down(sampling)),
            Down::ToSession {
                session: 7,
                msg: sampling.to_vec()
            }
        );
        let answer = br#"{"jsonrpc":"2.0","id":"srv-1","result":{"role":"assistant"}}"#;
        // Another session cannot answer it.
        assert_eq!(m.up(8, answer), Up::Drop);
        assert_eq!(m.up(7, answer), Up::Send(answer.to_vec()));
        // Answered once only.
        assert_eq!(m.up(7, answer), Up::Drop);
        assert_eq!(m.server_requests_in_flight(), 0);
    }

    #[test]
    fn server_request_with_no_or_several_busy_sessions_gets_an_error() {
        let mut m = Mux::new();
        let roots = br#"{"jsonrpc":"2.0","id":4,"method":"roots/list"}"#;
        let check = |d: Down, sessions: u64| {
            let Down::ToUpstream { msg } = d else {
                panic!("{d:?}")
            };
            let v = json(&msg);
            assert_eq!(v["id"], 4);
            assert_eq!(v["error"]["code"], UNROUTABLE_CODE);
            assert_eq!(v["error"]["data"]["kind"], UNROUTABLE_KIND);
            assert_eq!(v["error"]["data"]["sessions"], sessions);
        };
        check(one(m.down(roots)), 0);
        sent(m.up(1, br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#));
        sent(m.up(2, br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#));
        check(one(m.down(roots)), 2);
        assert_eq!(m.server_requests_in_flight(), 0);
    }

    #[test]
    fn server_ping_is_answered_by_the_relay() {
        let mut m = Mux::new();
        sent(m.up(1, br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#));
        assert_eq!(
            one(m.down(br#"{"jsonrpc":"2.0","id":"p1","method":"ping"}"#)),
            Down::ToUpstream {
                msg: br#"{"jsonrpc":"2.0","id":"p1","result":{}}"#.to_vec()
            }
        );
        assert_eq!(m.server_requests_in_flight(), 0);
    }

    #[test]
    fn list_changed_is_broadcast_and_logging_follows_the_busy_session() {
        let mut m = Mux::new();
        for line in [
            &br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#[..],
            br#"{"jsonrpc":"2.0","method":"notifications/resources/list_changed"}"#,
            br#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"f"}}"#,
        ] {
            assert_eq!(one(m.down(line)), Down::Broadcast { msg: line.to_vec() });
        }
        let log = br#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"hi"}}"#;
        assert_eq!(one(m.down(log)), Down::Broadcast { msg: log.to_vec() });
        sent(m.up(4, br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#));
        assert_eq!(
            one(m.down(log)),
            Down::ToSession {
                session: 4,
                msg: log.to_vec()
            }
        );
        sent(m.up(5, br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#));
        assert_eq!(one(m.down(log)), Down::Broadcast { msg: log.to_vec() });
    }

    #[test]
    fn server_cancel_of_its_request_goes_to_that_session() {
        let mut m = Mux::new();
        sent(m.up(9, br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#));
        m.down(br#"{"jsonrpc":"2.0","id":30,"method":"elicitation/create","params":{}}"#);
        let cancel =
            br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":30}}"#;
        assert_eq!(
            one(m.down(cancel)),
            Down::ToSession {
                session: 9,
                msg: cancel.to_vec()
            }
        );
        assert_eq!(m.server_requests_in_flight(), 0);
        assert_eq!(one(m.down(cancel)), Down::Drop);
    }

    #[test]
    fn end_session_cancels_its_requests_and_answers_its_server_requests() {
        let mut m = Mux::new();
        let a = upstream_id(&sent(
            m.up(1, br#"{"jsonrpc":"2.0","id":"a","method":"x"}"#),
        ));
        let b = upstream_id(&sent(
            m.up(1, br#"{"jsonrpc":"2.0","id":"b","method":"x"}"#),
        ));
        m.down(br#"{"jsonrpc":"2.0","id":"s","method":"sampling/createMessage"}"#);
        let other = upstream_id(&sent(
            m.up(2, br#"{"jsonrpc":"2.0","id":"a","method":"x"}"#),
        ));
        let out = m.end_session(1);
        assert_eq!(out.len(), 3);
        assert_eq!(json(&out[0])["params"]["requestId"], a);
        assert_eq!(json(&out[1])["params"]["requestId"], b);
        assert_eq!(json(&out[0])["method"], "notifications/cancelled");
        let err = json(&out[2]);
        assert_eq!(err["id"], "s");
        assert_eq!(err["error"]["code"], SESSION_ENDED_CODE);
        assert_eq!(err["error"]["data"]["kind"], SESSION_ENDED_KIND);
        assert_eq!(m.in_flight_for(1), 0);
        assert_eq!(m.in_flight(), 1);
        assert_eq!(m.end_session(1), Vec::<Vec<u8>>::new());
        // The other session is untouched; session 1's late reply is dropped.
        assert_eq!(
            one(m.down(format!(r#"{{"id":{a},"result":{{}}}}"#).as_bytes())),
            Down::Drop
        );
        assert!(matches!(
            one(m.down(format!(r#"{{"id":{other},"result":{{}}}}"#).as_bytes())),
            Down::Reply { session: 2, .. }
        ));
        assert_empty(&m);
    }

    #[test]
    fn fail_all_returns_every_request_and_forgets_them() {
        let mut m = Mux::new();
        sent(m.up(1, br#"{"jsonrpc":"2.0","id":"a","method":"x"}"#));
        sent(m.up(2, br#"{"jsonrpc":"2.0","id":3,"method":"x"}"#));
        m.down(br#"{"jsonrpc":"2.0","id":"s","method":"roots/list"}"#);
        sent(m.up(1, br#"{"jsonrpc":"2.0","id":0,"method":"initialize"}"#));
        assert_eq!(
            m.fail_all(),
            vec![(1, Id::Str("a".into())), (2, Id::Num(3)), (1, Id::Num(0))]
        );
        assert_empty(&m);
        assert_eq!(one(m.down(br#"{"id":1,"result":{}}"#)), Down::Drop);
    }

    #[test]
    fn batch_of_responses_yields_one_down_each() {
        let mut m = Mux::new();
        let a = upstream_id(&sent(
            m.up(1, br#"{"jsonrpc":"2.0","id":"x","method":"m"}"#),
        ));
        let b = upstream_id(&sent(
            m.up(2, br#"{"jsonrpc":"2.0","id":1.5,"method":"m"}"#),
        ));
        let batch = format!(
            r#"[ {{"jsonrpc":"2.0","id":{b},"result":{{"n":2}}}}, {{"jsonrpc":"2.0","id":{a},"error":{{"code":-1,"message":"no"}}}}, {{"id":12345,"result":{{}}}}, 17 ]"#
        );
        assert_eq!(
            m.down(batch.as_bytes()),
            vec![
                Down::Reply {
                    session: 2,
                    id: Id::Other("1.5".into()),
                    msg: br#"{"jsonrpc":"2.0","id":1.5,"result":{"n":2}}"#.to_vec()
                },
                Down::Reply {
                    session: 1,
                    id: Id::Str("x".into()),
                    msg: br#"{"jsonrpc":"2.0","id":"x","error":{"code":-1,"message":"no"}}"#
                        .to_vec()
                },
                Down::Drop,
                Down::Drop,
            ]
        );
        assert_empty(&m);
    }

    #[test]
    fn malformed_input_is_rejected_or_dropped() {
        let mut m = Mux::new();
        let Up::Reject(e) = m.up(1, b"{not json") else {
            panic!()
        };
        assert_eq!(json(&e)["error"]["code"], -32700);
        let Up::Reject(e) = m.up(1, br#"[{"jsonrpc":"2.0","id":1,"method":"m"}]"#) else {
            panic!()
        };
        assert_eq!(json(&e)["error"]["data"]["kind"], "invalid_request");
        let Up::Reject(e) = m.up(1, br#"{"id":2}"#) else {
            panic!()
        };
        assert_eq!(json(&e)["id"], 2);
        assert_eq!(m.down(b"garbage"), vec![Down::Drop]);
        assert_eq!(m.down(br#"{"id":"1","result":{}}"#), vec![Down::Drop]);
        assert_eq!(
            m.down(br#"{"id":null,"error":{"code":-32700,"message":"x"}}"#),
            vec![Down::Drop]
        );
        assert_empty(&m);
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
    fn splice_refuses_values_not_borrowed_from_the_base() {
        let base = br#"{"id":1}"#;
        let elsewhere: &RawValue = serde_json::from_str("1").unwrap();
        assert_eq!(splice(base, &mut [(elsewhere, b"2")]), None);
    }

    #[test]
    fn mixed_workload_leaves_no_state_behind() {
        let mut m = Mux::new();
        for round in 0..50i64 {
            for s in 0..4u64 {
                let line = format!(
                    r#"{{"jsonrpc":"2.0","id":{round},"method":"tools/call","params":{{"_meta":{{"progressToken":"p{round}"}}}}}}"#
                );
                sent(m.up(s, line.as_bytes()));
            }
            // Session 0 cancels, 1 times out, 2 gets its reply, 3 leaves.
            let cancel = format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{round}}}}}"#
            );
            sent(m.up(0, cancel.as_bytes()));
            assert!(m.expire(1, &Id::Num(round)).is_some());
            let n = *m.sessions[&2].get(&Id::Num(round)).unwrap();
            assert!(matches!(
                one(m.down(format!(r#"{{"id":{n},"result":{{}}}}"#).as_bytes())),
                Down::Reply { session: 2, .. }
            ));
            m.down(br#"{"jsonrpc":"2.0","id":"q","method":"sampling/createMessage"}"#);
            assert_eq!(m.end_session(3).len(), 2);
            assert_empty(&m);
        }
        sent(m.up(5, br#"{"jsonrpc":"2.0","id":1,"method":"x"}"#));
        m.fail_all();
        assert_empty(&m);
    }
}
