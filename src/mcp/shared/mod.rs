//! Many client sessions over one MCP server process ("shared" pool mode).
//!
//! The owner initializes the process once and answers each client's
//! `initialize` from the cached result. A `Mux`, one per process, then makes
//! the sessions' traffic look like one client's:
//!
//! - **up** (client → process): each request gets a fresh upstream id and, if
//!   it asked for progress, a fresh progress token; `notifications/cancelled`
//!   has its `requestId` rewritten to match; `notifications/initialized` is
//!   swallowed (the relay sent its own).
//! - **down** (process → client): replies get the client's id back and go to
//!   the session that asked; progress goes to the session that owns the token;
//!   server→client requests and request-scoped notifications (logs, …) go to
//!   the one session with requests in flight, and when there is not exactly
//!   one, nowhere (`Down::Dropped`: a log may carry one session's secrets);
//!   `resources/updated` goes to the sessions that subscribed to its URI;
//!   list-changed notifications go to every session; a notification that
//!   names a 2026-07-28 `subscriptions/listen` in flight
//!   (`_meta["io.modelcontextprotocol/subscriptionId"]`, its id at the
//!   server) goes to the session of that listen alone, its id put back.
//!
//! # Subscriptions
//!
//! The process holds one subscription per URI for every session, so the mux
//! keeps who subscribed to what (at most [`MAX_SUBSCRIPTIONS`] pairs per
//! process). A session's `resources/unsubscribe` reaches the server only
//! when no other session keeps the URI (the relay answers it otherwise), and
//! a session that ends takes its subscriptions with it: the relay sends the
//! server `resources/unsubscribe` for each URI nobody keeps any more.
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
//! answers, the server cancels them, or the session ends, at most
//! [`MAX_SERVER_REQUESTS`] per process (past it the server's request is
//! answered with an error at once).
//!
//! The `Mux` and its bookkeeping are in this file; `rewrite` finds values in
//! a message's own text and splices new bytes over them, and the unit tests
//! are in `tests`.

use std::collections::HashMap;

use crate::keyhash::KeyMap;
use crate::vecmap::VecMap;

use crate::proto::errors::RelayError;
use crate::proto::jsonrpc::{self, BatchItem, Dropped, Envelope, Id, Kind, Message};

mod fail;
mod rewrite;
mod subs;

use subs::Subscriptions;

use rewrite::progress_token_in_request;
pub use rewrite::{MetaScan, ParamScan, param_scan, scan_params};
pub(crate) use rewrite::{member, member_of_text, members, object_members, splice};

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

/// Resource subscriptions one process holds for its sessions, counted per
/// (URI, session) pair: a `resources/subscribe` beyond it is answered with a
/// `queue_full` error and not sent.
pub const MAX_SUBSCRIPTIONS: usize = 4096;

/// Server→client requests one process may have routed to its sessions and
/// not yet seen answered: past it, a new one is answered with a
/// `queue_full` error (the server does not wait for it) and counted
/// (`server_requests_full`), since a client that never answers them would
/// otherwise let the table grow for as long as its session lives.
pub const MAX_SERVER_REQUESTS: usize = 4096;

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
    /// Do not forward; answer the client with this result (a
    /// `resources/unsubscribe` while other sessions keep the subscription).
    Answer(Vec<u8>),
    /// Swallow it, and count it: it named something not this session's (a
    /// cancel for a request it has not in flight).
    Dropped(Dropped),
}

/// Where a message from the process goes.
#[derive(Debug, PartialEq)]
pub enum Down {
    /// The reply to a client request, with the client's id restored.
    Reply {
        session: SessionKey,
        id: Id,
        msg: Vec<u8>,
        /// The request came through [`Mux::up_bridged`] and its result was
        /// made modern here, in the same splice (the owner must not do it
        /// again). False for every other reply, and for a bridged one the
        /// splice could not tell about (an error, escapes in the result):
        /// the owner's full path decides those.
        modern: bool,
    },
    /// Progress (token restored), a server→client request, or the server's
    /// cancellation of its own request.
    ToSession { session: SessionKey, msg: Vec<u8> },
    /// To every session on this process.
    Broadcast { msg: Vec<u8> },
    /// To these sessions (those subscribed to the resource updated).
    ToSessions {
        sessions: Vec<SessionKey>,
        msg: Vec<u8>,
    },
    /// Back to the process: the relay answers it (ping, unroutable request).
    ToUpstream { msg: Vec<u8> },
    /// Back to the process, and counted: a server→client request refused
    /// (over [`MAX_SERVER_REQUESTS`]), answered with this error.
    Refused { msg: Vec<u8>, why: Dropped },
    /// Nowhere: a late reply, unknown progress, or not a JSON-RPC message.
    Drop,
    /// Nowhere, counted: a notification no one session can be told to own,
    /// or a batch element that is no message.
    Dropped(Dropped),
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
    /// Sent by [`Mux::up_bridged`]: its result is made modern on the way
    /// back.
    modern: bool,
    /// A `subscriptions/listen`: in flight for as long as it listens, so it
    /// does not make its session the busy one (`sole_session`).
    listen: bool,
}

/// Rewrites and routes the traffic of many sessions sharing one process.
pub struct Mux {
    /// The next upstream id to try.
    next: i64,
    /// Upstream id → the client request it stands for (ids the mux makes:
    /// the fast `KeyMap`).
    pending: KeyMap<i64, Pending>,
    /// Session → its in-flight requests (client id → upstream id). A session
    /// is present only while it has at least one, so `len()` is the number of
    /// sessions with requests in flight.
    sessions: KeyMap<SessionKey, HashMap<Id, i64>>,
    /// Server→client request id → the session it was routed to.
    server_requests: HashMap<Id, SessionKey>,
    /// Session → its `subscriptions/listen` requests in flight (present
    /// only while it has one): the relay's own for a stamped session, or a
    /// 2026-07-28 client's passed to a modern process. A list: it is read
    /// only when a listen begins or ends and for a message no request
    /// names.
    listens: VecMap<SessionKey, usize>,
    /// Who subscribed to which resource (boxed: rarely used, and it keeps
    /// the mux small).
    subs: Box<Subscriptions>,
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
            pending: KeyMap::default(),
            sessions: KeyMap::default(),
            server_requests: HashMap::new(),
            listens: VecMap::new(),
            subs: Box::default(),
        }
    }

    /// A message from `session`'s client, as bytes (parsed here): one
    /// JSON-RPC message, not a batch (the owner splits batches).
    pub fn up(&mut self, session: SessionKey, line: &[u8]) -> Up {
        self.up_as(session, line, false)
    }

    /// [`up`](Self::up); `modern`: a bridged request (`up_bridged`).
    fn up_as(&mut self, session: SessionKey, line: &[u8], modern: bool) -> Up {
        match jsonrpc::peek(line) {
            Ok(Message::Single(env)) => self.up_parsed_as(session, line, &env, modern),
            Ok(Message::Batch(_)) => Up::Reject(relay_error(
                None,
                RelayError::InvalidRequest,
                "Invalid Request: batches must be split before the shared mux",
            )),
            Err(_) => Up::Reject(relay_error(None, RelayError::ParseError, "Parse error")),
        }
    }

    /// A message from `session`'s client that the front has parsed already
    /// (`env` is `line` parsed): the hot path parses each message once.
    pub fn up_parsed(&mut self, session: SessionKey, line: &[u8], env: &Envelope) -> Up {
        self.up_parsed_as(session, line, env, false)
    }

    /// A 2026-07-28 request the era bridge forwards to this (handshake-era)
    /// process, parsed by the front (`edit`: its stripped `_meta`, as
    /// [`up_parsed_edited`](Self::up_parsed_edited)): carried like any
    /// request, and its reply's result is made modern (`resultType`, cache
    /// hints) in the splice that restores the client's id
    /// (`Down::Reply::modern`), so the reply is read once.
    pub fn up_bridged(
        &mut self,
        session: SessionKey,
        line: &[u8],
        env: &Envelope,
        edit: Option<(&str, &[u8])>,
    ) -> Up {
        match edit {
            Some(edit) => self.up_parsed_edited_as(session, line, env, edit, true),
            None => self.up_parsed_as(session, line, env, true),
        }
    }

    fn up_parsed_as(
        &mut self,
        session: SessionKey,
        line: &[u8],
        env: &Envelope,
        modern: bool,
    ) -> Up {
        if let Some(refused) = ambiguous(env) {
            return refused;
        }
        match env.kind() {
            Kind::Request => self.up_request(session, line, env, None, modern),
            Kind::Notification => self.up_notification(session, line, env),
            Kind::Response => self.up_response(session, env, line),
            Kind::Invalid => Up::Reject(relay_error(
                env.id().as_ref(),
                RelayError::InvalidRequest,
                "Invalid Request",
            )),
        }
    }

    /// [`up_parsed`](Self::up_parsed) of `line` with one more edit of its
    /// own text (`edit`: a value borrowed from `line` and what replaces
    /// it; the era bridge's stripped `_meta`), spliced in the same pass as
    /// the id: a request is read once and copied once. A request whose
    /// progress token lies in what is edited, or any other message, gets
    /// the edit first and is read again.
    pub fn up_parsed_edited(
        &mut self,
        session: SessionKey,
        line: &[u8],
        env: &Envelope,
        edit: (&str, &[u8]),
    ) -> Up {
        self.up_parsed_edited_as(session, line, env, edit, false)
    }

    fn up_parsed_edited_as(
        &mut self,
        session: SessionKey,
        line: &[u8],
        env: &Envelope,
        edit: (&str, &[u8]),
        modern: bool,
    ) -> Up {
        if let Some(refused) = ambiguous(env) {
            return refused;
        }
        let token = env.params.and_then(progress_token_in_request);
        if env.kind() == Kind::Request && token.is_none() {
            return self.up_request(session, line, env, Some(edit), modern);
        }
        match splice(line, &mut [edit]) {
            Some(edited) => self.up_as(session, &edited, modern),
            None => Up::Reject(relay_error(
                env.id().as_ref(),
                RelayError::InvalidRequest,
                "Invalid Request",
            )),
        }
    }

    /// `extra`: one more edit of `line`, only for a request without a
    /// progress token (the caller has looked).
    fn up_request(
        &mut self,
        session: SessionKey,
        line: &[u8],
        env: &Envelope,
        extra: Option<(&str, &[u8])>,
        modern: bool,
    ) -> Up {
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
        // The method, read once for what depends on it below.
        let method = env.method();
        let method = method.as_deref().unwrap_or_default();
        if let Some(done) = self.subscription(session, env, method, &id, raw_id.get()) {
            return done;
        }
        // A request with an extra edit comes from `up_parsed_edited_as`,
        // which looked for its progress token already (and found none).
        let token = match extra {
            Some(_) => None,
            None => env.params.and_then(progress_token_in_request),
        };
        let n = self.fresh_id();
        debug_assert!(n > 0, "fresh ids are positive");
        let upstream = crate::proto::decimal::Decimal::new(n.unsigned_abs());
        // The id, and the progress token or the caller's edit (never both:
        // see `token`), on the stack.
        let mut edits = [(raw_id.get(), upstream.as_bytes()); 2];
        let second = token.map(|t| (t.get(), upstream.as_bytes())).or(extra);
        if let Some(edit) = second {
            edits[1] = edit;
        }
        let Some(msg) = splice(line, &mut edits[..1 + usize::from(second.is_some())]) else {
            return Up::Reject(relay_error(
                Some(&id),
                RelayError::InvalidRequest,
                "Invalid Request",
            ));
        };
        let listen = method == "subscriptions/listen";
        if listen {
            *self.listens.get_or_default(session) += 1;
        }
        self.pending.insert(
            n,
            Pending {
                session,
                id: id.clone(),
                id_text: raw_id.get().into(),
                token: token.map(|t| t.get().into()),
                // MCP lifecycle: `initialize` cannot be cancelled.
                cancellable: method != "initialize",
                modern,
                listen,
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
            // Not one of this session's requests in flight (answered already,
            // or never its own): nothing of it may reach the server.
            return Up::Dropped(Dropped::CancelNotInFlight);
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

    /// A 2026-07-28 `subscriptions/listen` notification names its listen
    /// in `_meta["io.modelcontextprotocol/subscriptionId"]` (its id at the
    /// server): it goes to the session whose listen that is, the id put
    /// back as the session wrote it. `None`: no such mark, or no such
    /// listen in flight (routed as any notification).
    fn down_to_listener(&self, base: &[u8], env: &Envelope) -> Option<Down> {
        const KEY: &str = "io.modelcontextprotocol/subscriptionId";
        let params = env.params?;
        memchr::memmem::find(params.get().as_bytes(), KEY.as_bytes())?;
        let raw = member(member(params, "_meta")?, KEY)?;
        let Id::Num(n) = Id::from_raw(raw) else {
            return None;
        };
        let p = self.pending.get(&n)?;
        let msg = splice(base, &mut [(raw, p.id_text.as_bytes())])?;
        Some(Down::ToSession {
            session: p.session,
            msg,
        })
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
    /// single message, one per element for a batch; an empty batch is one
    /// `Dropped`. A nested array in a batch is dropped (JSON-RPC has none),
    /// after one error `Reply` per request in flight whose reply it held,
    /// so that request is answered now rather than at its timeout.
    pub fn down(&mut self, line: &[u8]) -> Vec<Down> {
        match jsonrpc::peek(line) {
            Ok(Message::Single(env)) => vec![self.down_one(line, &env)],
            Ok(Message::Batch(items)) if items.is_empty() => {
                vec![Down::Dropped(Dropped::BatchEmpty)]
            }
            Ok(Message::Batch(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for raw in items {
                    match jsonrpc::batch_item(raw) {
                        BatchItem::Msg(env) => out.push(self.down_one(raw.get().as_bytes(), &env)),
                        BatchItem::Nested(ids) => {
                            for id in ids {
                                if let Id::Num(n) = id
                                    && let Some(d) = self.fail_reply(
                                        n,
                                        "The server's reply came inside a nested batch, which \
                                         JSON-RPC does not allow",
                                    )
                                {
                                    out.push(d);
                                }
                            }
                            out.push(Down::Dropped(Dropped::BatchNested));
                        }
                        BatchItem::Invalid => out.push(Down::Dropped(Dropped::BatchInvalidItem)),
                    }
                }
                out
            }
            Err(_) => vec![self.down_invalid(line)],
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
        // A bridged request's result made modern in the same splice.
        let stamp = match (p.modern, env.result) {
            (true, Some(result)) => {
                crate::mcp::era::stamp::modern_result(result, env.result_unstamped)
            }
            _ => None,
        };
        let msg = match stamp {
            Some((brace, head)) => splice(
                base,
                &mut [(raw.get(), p.id_text.as_bytes()), (brace, head.as_bytes())],
            ),
            None => splice(base, &mut [(raw.get(), p.id_text.as_bytes())]),
        };
        let Some(msg) = msg else {
            return Down::Drop;
        };
        match self.forget(n) {
            Some(p) => Down::Reply {
                session: p.session,
                id: p.id,
                msg,
                modern: stamp.is_some(),
            },
            None => Down::Drop,
        }
    }

    fn down_notification(&mut self, base: &[u8], env: &Envelope) -> Down {
        let Some(method) = env.method() else {
            return Down::Drop;
        };
        if let Some(d) = self.down_to_listener(base, env) {
            return d;
        }
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
            m if m.starts_with("notifications/") && m.ends_with("/list_changed") => {
                Down::Broadcast { msg: base.to_vec() }
            }
            // To the sessions that subscribed to that URI, and no other.
            "notifications/resources/updated" => {
                let subscribed = env
                    .param_str("uri")
                    .and_then(|uri| self.subs.by_uri.get(uri.as_str()))
                    .filter(|list| !list.is_empty());
                match subscribed {
                    Some(list) => Down::ToSessions {
                        sessions: list.clone(),
                        msg: base.to_vec(),
                    },
                    None => Down::Dropped(Dropped::Unattributed),
                }
            }
            // Logging and anything else: about the request in flight, if
            // exactly one session has any. Otherwise nobody can tell whose it
            // is, and a log may hold one session's secrets: it goes to no one
            // (issue 11, class 9).
            _ => match self.sole_session() {
                Some(session) => Down::ToSession {
                    session,
                    msg: base.to_vec(),
                },
                None => Down::Dropped(Dropped::Unattributed),
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
        let room = self.server_requests.len() < MAX_SERVER_REQUESTS
            || self.server_requests.contains_key(&id);
        match self.sole_session() {
            Some(_) if !room => Down::Refused {
                msg: relay_error(
                    Some(&id),
                    RelayError::QueueFull,
                    "mcp-relay: too many server-to-client requests await their answers on \
                     this process",
                ),
                why: Dropped::ServerRequestsFull,
            },
            Some(session) => {
                self.server_requests.insert(id, session);
                Down::ToSession {
                    session,
                    msg: base.to_vec(),
                }
            }
            None => {
                let busy = self.busy_sessions().count();
                let message = format!(
                    "mcp-relay: cannot route a server-to-client request in shared pool mode \
                     ({busy} sessions have requests in flight; exactly one is needed)"
                );
                Down::ToUpstream {
                    msg: jsonrpc::error_response(
                        Some(&id),
                        UNROUTABLE_CODE,
                        &message,
                        crate::proto::object::object([
                            ("kind", serde_json::Value::from(UNROUTABLE_KIND)),
                            ("sessions", serde_json::Value::from(busy)),
                        ]),
                    ),
                }
            }
        }
    }

    /// The session ended: forgets its state and returns what to send the
    /// process, in order: `notifications/cancelled` for each of its in-flight
    /// requests (except `initialize`), `resources/unsubscribe` for each URI
    /// only it was subscribed to, then an error reply
    /// ([`SESSION_ENDED_CODE`]) to each server→client request it had not
    /// answered, so the server does not wait forever.
    pub fn end_session(&mut self, session: SessionKey) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        self.listens.remove(&session);
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
        // Subscriptions nobody else keeps end at the server too.
        self.subs.end_session(session, &mut out);
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
                crate::proto::object::object([(
                    "kind",
                    serde_json::Value::from(SESSION_ENDED_KIND),
                )]),
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
        self.listens = VecMap::new();
        self.server_requests.clear();
        *self.subs = Subscriptions::default();
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
    /// A listen does not count: it stays in flight while its session is
    /// idle, and would make it the one to get whatever the server sends
    /// between other sessions' requests (a late log of another's call).
    fn sole_session(&self) -> Option<SessionKey> {
        if self.listens.is_empty() {
            return match self.sessions.len() {
                1 => self.sessions.keys().next().copied(),
                _ => None,
            };
        }
        let mut busy = self.busy_sessions();
        match (busy.next(), busy.next()) {
            (Some(s), None) => Some(s),
            _ => None,
        }
    }

    /// The sessions with a request in flight that is not a listen.
    fn busy_sessions(&self) -> impl Iterator<Item = SessionKey> + '_ {
        self.sessions.iter().filter_map(|(s, reqs)| {
            let listens = self.listens.get(s).copied().unwrap_or(0);
            (reqs.len() > listens).then_some(*s)
        })
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
        if p.listen {
            self.unlisten(p.session);
        }
        if let Some(reqs) = self.sessions.get_mut(&p.session) {
            reqs.remove(&p.id);
            if reqs.is_empty() {
                self.sessions.remove(&p.session);
            }
        }
        Some(p)
    }

    /// One listen of `session` is no longer in flight.
    fn unlisten(&mut self, session: SessionKey) {
        if let Some(n) = self.listens.get_mut(&session) {
            *n -= 1;
            if *n == 0 {
                self.listens.remove(&session);
            }
        }
    }
}

/// A client message with a member the relay reads written twice
/// (`proto::unique`): which of the two the server would read is its
/// parser's choice, so none of it may reach the process (an id rewritten
/// in one spelling and read in the other). The fronts refuse it first;
/// this is the mux's own guard.
fn ambiguous(env: &Envelope) -> Option<Up> {
    let what = env.ambiguous?;
    let id = env
        .id()
        .filter(|_| what != "id" && env.kind() == Kind::Request);
    Some(Up::Reject(relay_error(
        id.as_ref(),
        RelayError::InvalidRequest,
        "Invalid Request: a member the relay reads is written twice",
    )))
}

fn relay_error(id: Option<&Id>, err: RelayError, message: &str) -> Vec<u8> {
    jsonrpc::error_response(
        id,
        err.code(),
        message,
        crate::proto::object::object([("kind", serde_json::Value::from(err.kind()))]),
    )
}

#[cfg(test)]
mod tests;
