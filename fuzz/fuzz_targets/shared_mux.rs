//! The shared-mode rewrite (`mcp::shared::Mux`): four client sessions and
//! one "server" exchange a sequence of messages that `arbitrary` builds from
//! the input (requests with every kind of id and progress token, replies,
//! progress, cancellations from both sides, server→client requests, raw
//! lines, session ends, timeouts, the process dying).
//!
//! A reference model of the routing tables predicts every outcome, and the
//! target checks the mux against it, byte for byte:
//! - a request `up`-ed from a session goes out with a fresh integer id (and
//!   that integer as its progress token, if it had one), everything else in
//!   the line unchanged;
//! - the server's reply to that integer comes `down` as a `Reply` to that
//!   session, with exactly the client's original id bytes restored (and
//!   progress with exactly the original token): no upstream integer reaches
//!   a session in a `Reply`, and nothing is routed to another session;
//! - cancellations, `end_session`, `expire` and `fail_all` forget exactly
//!   what they should; the in-flight counters always match the model;
//! - nothing panics, whatever the bytes.
#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use mcp_relay::mcp::shared::{Down, Mux, SessionKey, Up};
use mcp_relay::proto::jsonrpc::{self, BatchItem, Dropped, Envelope, Id, Kind, Message};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

const SESSIONS: u64 = 4;

// ---------------------------------------------------------------- inputs

#[derive(Arbitrary, Debug, Clone)]
enum IdGen {
    Small(u8),
    Int(i64),
    Str(String),
    /// Every character `\u`-escaped: the same id as `Str`, other bytes.
    Escaped(String),
    Float(u8),
    Null,
    Bool(bool),
    Object(u8),
}

impl IdGen {
    fn text(&self) -> String {
        match self {
            IdGen::Small(n) => (n % 8).to_string(),
            IdGen::Int(n) => n.to_string(),
            IdGen::Str(s) => serde_json::to_string(s).unwrap(),
            IdGen::Escaped(s) => {
                let mut out = String::from("\"");
                for unit in s.encode_utf16() {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
                out.push('"');
                out
            }
            IdGen::Float(n) => [
                "1.5",
                "1.0",
                "-0",
                "1e2",
                "0.0",
                "2E0",
                "-1",
                "9223372036854775808",
            ][usize::from(n % 8)]
            .to_owned(),
            IdGen::Null => "null".to_owned(),
            IdGen::Bool(b) => b.to_string(),
            IdGen::Object(n) => ["{}", "{\"a\": 1}", "[1]", "[]"][usize::from(n % 4)].to_owned(),
        }
    }
}

const CLIENT_METHODS: &[&str] = &[
    "tools/call",
    "initialize",
    "ping",
    "resources/read",
    "notifications/cancelled",
    "Initialize",
];
const SERVER_METHODS: &[&str] = &[
    "sampling/createMessage",
    "ping",
    "roots/list",
    "elicitation/create",
    "notifications/message",
    "notifications/tools/list_changed",
    "notifications/resources/updated",
    "notifications/progress",
];

#[derive(Arbitrary, Debug)]
enum Op {
    Request {
        session: u8,
        id: IdGen,
        method: u8,
        token: Option<IdGen>,
        layout: u8,
    },
    /// `notifications/cancelled` for one of the session's own requests
    /// (`pick` among them) or for `other`.
    Cancel {
        session: u8,
        pick: Option<u8>,
        other: IdGen,
    },
    Initialized {
        session: u8,
    },
    ClientNotification {
        session: u8,
        method: u8,
    },
    /// A session answers a server→client request (`pick` among those routed).
    ClientResponse {
        session: u8,
        pick: u8,
    },
    RawUp {
        session: u8,
        line: String,
    },
    /// The server answers a request in flight (`pick`), or a stale id.
    Answer {
        pick: u8,
        error: bool,
        layout: u8,
        batch: bool,
    },
    Progress {
        pick: u8,
        layout: u8,
    },
    ServerRequest {
        id: IdGen,
        method: u8,
    },
    ServerCancel {
        pick: u8,
        other: IdGen,
    },
    ServerNotification {
        method: u8,
    },
    RawDown {
        line: String,
    },
    EndSession {
        session: u8,
    },
    Expire {
        session: u8,
        pick: Option<u8>,
        other: IdGen,
    },
    FailAll,
}

// ---------------------------------------------------------------- model

struct Pending {
    session: SessionKey,
    id: Id,
    id_text: String,
    token_text: Option<String>,
    cancellable: bool,
}

#[derive(Default)]
struct Model {
    /// Upstream id → the client request.
    pending: BTreeMap<i64, Pending>,
    /// Server→client request id → the session it was routed to.
    server_requests: HashMap<Id, SessionKey>,
    last_upstream: i64,
    /// A `resources/(un)subscribe` went through the mux (only raw lines can
    /// make one): subscription routing is then not modelled, and the
    /// outcomes it decides are checked for shape only.
    subscribed: bool,
}

impl Model {
    fn find(&self, session: SessionKey, id: &Id) -> Option<i64> {
        self.pending
            .iter()
            .find(|(_, p)| p.session == session && &p.id == id)
            .map(|(n, _)| *n)
    }

    fn sole_session(&self) -> Option<SessionKey> {
        let mut it = self.pending.values().map(|p| p.session);
        let first = it.next()?;
        it.all(|s| s == first).then_some(first)
    }

    fn of_session(&self, session: SessionKey) -> Vec<i64> {
        self.pending
            .iter()
            .filter(|(_, p)| p.session == session)
            .map(|(n, _)| *n)
            .collect()
    }

    fn check(&self, mux: &Mux) {
        assert_eq!(mux.in_flight(), self.pending.len(), "in_flight");
        for s in 0..SESSIONS {
            assert_eq!(
                mux.in_flight_for(s),
                self.of_session(s).len(),
                "in_flight_for({s})"
            );
        }
        assert_eq!(
            mux.server_requests_in_flight(),
            self.server_requests.len(),
            "server_requests_in_flight"
        );
    }
}

// ---------------------------------------------------------------- helpers

/// An object's members, in order, values borrowed.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'a>, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    out.push((k, map.next_value()?));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// `obj.key` (the last one if repeated), borrowed from `obj`'s text.
fn member<'a>(obj: &'a str, key: &str) -> Option<&'a RawValue> {
    let Members(members) = serde_json::from_str(obj).ok()?;
    members
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .last()
}

/// `params._meta.progressToken`, if a string or an integer.
fn progress_token<'a>(env: &Envelope<'a>) -> Option<&'a RawValue> {
    let t = member(member(env.params?.get(), "_meta")?.get(), "progressToken")?;
    matches!(Id::from_raw(t), Id::Num(_) | Id::Str(_)).then_some(t)
}

/// `base` with each value (borrowed from `base`) replaced.
fn splice(base: &[u8], edits: &[(&str, &str)]) -> Vec<u8> {
    let origin = base.as_ptr() as usize;
    let mut spans: Vec<(usize, usize, &str)> = edits
        .iter()
        .map(|(raw, with)| {
            let start = raw.as_ptr() as usize - origin;
            (start, start + raw.len(), *with)
        })
        .collect();
    spans.sort();
    let mut out = Vec::new();
    let mut at = 0;
    for (start, end, with) in spans {
        assert!(start >= at && end <= base.len());
        out.extend_from_slice(&base[at..start]);
        out.extend_from_slice(with.as_bytes());
        at = end;
    }
    out.extend_from_slice(&base[at..]);
    out
}

fn single(bytes: &[u8]) -> Envelope<'_> {
    match jsonrpc::peek(bytes) {
        Ok(Message::Single(env)) => env,
        _ => panic!(
            "not one JSON-RPC object: {:?}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---------------------------------------------------------------- up

fn up(mux: &mut Mux, model: &mut Model, session: SessionKey, line: &[u8]) {
    let got = mux.up(session, line);
    let env = match jsonrpc::peek(line) {
        Ok(Message::Single(env)) => env,
        Ok(Message::Batch(_)) | Err(_) => {
            assert!(
                matches!(got, Up::Reject(_)),
                "not a single message: {got:?}"
            );
            return;
        }
    };
    match env.kind() {
        Kind::Invalid => assert!(matches!(got, Up::Reject(_)), "invalid: {got:?}"),
        Kind::Request => {
            let raw_id = env.id.expect("a request has an id");
            let id = Id::from_raw(raw_id);
            if env.method_is("resources/subscribe") || env.method_is("resources/unsubscribe") {
                model.subscribed = true;
                if !matches!(got, Up::Send(_)) {
                    assert!(matches!(got, Up::Answer(_) | Up::Reject(_)), "{got:?}");
                    return;
                }
            }
            if model.find(session, &id).is_some() {
                let Up::Reject(err) = got else {
                    panic!("duplicate id {id} in flight not refused: {got:?}");
                };
                assert_eq!(single(&err).id().as_ref(), Some(&id));
                return;
            }
            let Up::Send(sent) = got else {
                panic!("request not sent: {got:?} for {:?}", show(line));
            };
            let out = single(&sent);
            let up_raw = out.id.expect("sent without an id").get();
            let n: i64 = up_raw
                .parse()
                .unwrap_or_else(|_| panic!("upstream id {up_raw} is not an integer"));
            assert_eq!(up_raw, n.to_string());
            assert!(
                n >= 1 && n > model.last_upstream,
                "upstream id {n} not fresh"
            );
            assert!(!model.pending.contains_key(&n));
            model.last_upstream = n;
            let token = progress_token(&env);
            let mut edits = vec![(raw_id.get(), up_raw)];
            if let Some(t) = token {
                edits.push((t.get(), up_raw));
            }
            let expected = splice(line, &edits);
            assert_eq!(show(&sent), show(&expected), "request rewritten wrongly");
            model.pending.insert(
                n,
                Pending {
                    session,
                    id,
                    id_text: raw_id.get().to_owned(),
                    token_text: token.map(|t| t.get().to_owned()),
                    cancellable: !env.method_is("initialize"),
                },
            );
        }
        Kind::Notification => match env.method().as_deref() {
            Some("notifications/initialized") => assert_eq!(got, Up::Drop),
            Some("notifications/cancelled") => {
                let rid = env.params.and_then(|p| member(p.get(), "requestId"));
                let target = rid.and_then(|r| model.find(session, &Id::from_raw(r)));
                match (rid, target) {
                    (Some(rid), Some(n)) if model.pending[&n].cancellable => {
                        let expected = splice(line, &[(rid.get(), &n.to_string())]);
                        assert_eq!(got, Up::Send(expected), "cancel not rewritten");
                        model.pending.remove(&n);
                    }
                    // Naming nothing of its own in flight: dropped, counted.
                    (Some(_), None) => assert_eq!(
                        got,
                        Up::Dropped(Dropped::CancelNotInFlight),
                        "cancel of another's request"
                    ),
                    _ => assert_eq!(got, Up::Drop, "cancel of nothing cancellable"),
                }
            }
            _ => assert_eq!(got, Up::Send(line.to_vec()), "notification altered"),
        },
        Kind::Response => {
            let id = env.id().expect("a response has an id");
            if model.server_requests.get(&id) == Some(&session) {
                model.server_requests.remove(&id);
                assert_eq!(got, Up::Send(line.to_vec()), "answer to the server altered");
            } else {
                assert_eq!(got, Up::Drop, "answer to nothing this session was asked");
            }
        }
    }
}

// ---------------------------------------------------------------- down

fn down(mux: &mut Mux, model: &mut Model, line: &[u8]) {
    let mut got = mux.down(line).into_iter();
    match jsonrpc::peek(line) {
        Ok(Message::Single(env)) => {
            down_one(model, &env, line, got.next().expect("one Down"));
        }
        Ok(Message::Batch(items)) if items.is_empty() => {
            assert_eq!(got.next(), Some(Down::Dropped(Dropped::BatchEmpty)));
        }
        Ok(Message::Batch(items)) => {
            for raw in items {
                match jsonrpc::batch_item(raw) {
                    BatchItem::Msg(env) => {
                        let d = got.next().expect("one Down per message");
                        down_one(model, &env, raw.get().as_bytes(), d);
                    }
                    // The requests whose replies a nested array held are
                    // answered with an error, to their own sessions.
                    BatchItem::Nested(ids) => {
                        for id in ids {
                            let Id::Num(n) = id else { continue };
                            let Some(p) = model.pending.remove(&n) else {
                                continue;
                            };
                            let Some(Down::Reply { session, id, msg, modern }) = got.next() else {
                                panic!("the request inside a nested batch was not answered");
                            };
                            // Only requests sent with `up_bridged` are made modern.
                            assert!(!modern, "a reply made modern without a bridged request");
                            assert_eq!((session, &id), (p.session, &p.id));
                            assert_eq!(single(&msg).kind(), Kind::Response);
                            assert_eq!(single(&msg).id.map(|r| r.get().to_owned()), Some(p.id_text));
                        }
                        assert_eq!(got.next(), Some(Down::Dropped(Dropped::BatchNested)));
                    }
                    BatchItem::Invalid => {
                        assert_eq!(got.next(), Some(Down::Dropped(Dropped::BatchInvalidItem)));
                    }
                }
            }
        }
        Err(_) => {
            let d = got.next().expect("one Down");
            // An unparsable line naming a request in flight answers it.
            if let Down::Reply { session, id, .. } = &d {
                let Some(Id::Num(n)) = jsonrpc::recover_id(line, line) else {
                    panic!("a reply from an unparsable line with no id");
                };
                let p = model.pending.remove(&n).expect("in flight");
                assert_eq!((*session, id), (p.session, &p.id));
            } else {
                assert_eq!(d, Down::Drop);
            }
        }
    }
    assert_eq!(got.next(), None, "one Down per message");
}

fn down_one(model: &mut Model, env: &Envelope, base: &[u8], got: Down) {
    match env.kind() {
        Kind::Response => {
            let raw = env.id.expect("a response has an id");
            let n = match Id::from_raw(raw) {
                Id::Num(n) if model.pending.contains_key(&n) => n,
                _ => {
                    assert_eq!(got, Down::Drop, "reply to no request in flight routed");
                    return;
                }
            };
            let p = model.pending.remove(&n).unwrap();
            let Down::Reply { session, id, msg, modern } = got else {
                panic!("reply to {n} not delivered: {got:?}");
            };
            assert!(!modern, "a reply made modern without a bridged request");
            assert_eq!(session, p.session, "reply routed to another session");
            assert_eq!(id, p.id);
            // The property: the client's id, byte for byte, and no upstream
            // integer in its place.
            let restored = single(&msg).id.expect("reply lost its id").get().to_owned();
            assert_eq!(restored, p.id_text, "reply id not restored exactly");
            assert_eq!(show(&msg), show(&splice(base, &[(raw.get(), &p.id_text)])));
        }
        Kind::Notification => {
            let Some(method) = env.method() else {
                assert_eq!(got, Down::Drop);
                return;
            };
            let copy = base.to_vec();
            match &*method {
                "notifications/progress" => {
                    let tok = env.params.and_then(|p| member(p.get(), "progressToken"));
                    let owner = tok.and_then(|t| match Id::from_raw(t) {
                        Id::Num(n) => model.pending.get(&n),
                        _ => None,
                    });
                    match (tok, owner) {
                        (Some(tok), Some(p)) if p.token_text.is_some() => {
                            let text = p.token_text.as_deref().unwrap();
                            let expected = splice(base, &[(tok.get(), text)]);
                            assert_eq!(
                                got,
                                Down::ToSession {
                                    session: p.session,
                                    msg: expected
                                },
                                "progress not restored"
                            );
                        }
                        _ => assert_eq!(got, Down::Drop, "progress for no one routed"),
                    }
                }
                "notifications/cancelled" => {
                    let rid = env.params.and_then(|p| member(p.get(), "requestId"));
                    match rid.and_then(|r| model.server_requests.remove(&Id::from_raw(r))) {
                        Some(session) => {
                            assert_eq!(got, Down::ToSession { session, msg: copy })
                        }
                        None => assert_eq!(got, Down::Drop),
                    }
                }
                m if m.starts_with("notifications/") && m.ends_with("/list_changed") => {
                    assert_eq!(got, Down::Broadcast { msg: copy })
                }
                // Only to subscribers; with none, to nobody.
                "notifications/resources/updated" if model.subscribed => assert!(
                    matches!(got, Down::ToSessions { .. } | Down::Dropped(Dropped::Unattributed)),
                    "{got:?}"
                ),
                "notifications/resources/updated" => {
                    assert_eq!(got, Down::Dropped(Dropped::Unattributed))
                }
                // A log and the like: to the only session in flight, or to
                // nobody (it may hold a session's secrets).
                _ => match model.sole_session() {
                    Some(session) => assert_eq!(got, Down::ToSession { session, msg: copy }),
                    None => assert_eq!(got, Down::Dropped(Dropped::Unattributed)),
                },
            }
        }
        Kind::Request => {
            let id = env.id().expect("a request has an id");
            let routed = (!env.method_is("ping"))
                .then(|| model.sole_session())
                .flatten();
            match routed {
                Some(session) => {
                    assert_eq!(
                        got,
                        Down::ToSession {
                            session,
                            msg: base.to_vec()
                        }
                    );
                    model.server_requests.insert(id, session);
                }
                None => {
                    let Down::ToUpstream { msg } = got else {
                        panic!("server request should be answered by the relay: {got:?}");
                    };
                    let answer = single(&msg);
                    assert_eq!(answer.kind(), Kind::Response);
                    assert_eq!(answer.id(), Some(id));
                }
            }
        }
        Kind::Invalid => assert_eq!(got, Down::Drop),
    }
}

// ---------------------------------------------------------------- driver

fn pick<T: Copy>(items: &[T], i: u8) -> Option<T> {
    (!items.is_empty()).then(|| items[usize::from(i) % items.len()])
}

fn request_line(id: &str, method: &str, token: Option<&str>, layout: u8) -> String {
    let (c, sp) = if layout & 1 == 0 {
        (":", "")
    } else {
        (" : ", " ")
    };
    let name = if layout & 2 == 0 {
        "progressToken"
    } else {
        "progress\\u0054oken"
    };
    let params = match token {
        Some(t) => format!("{{\"name\"{c}\"x\",{sp}\"_meta\"{c}{{\"{name}\"{c}{t}}}}}"),
        None => format!("{{\"name\"{c}\"x\"}}"),
    };
    let id_m = format!("\"id\"{c}{id}");
    let method_m = format!("\"method\"{c}{}", serde_json::to_string(method).unwrap());
    let params_m = format!("\"params\"{c}{params}");
    let members = if layout & 4 == 0 {
        [id_m, method_m, params_m]
    } else {
        [params_m, method_m, id_m]
    };
    format!(
        "{{\"jsonrpc\"{c}\"2.0\",{sp}{}}}",
        members.join(&format!(",{sp}"))
    )
}

fn run(ops: Vec<Op>) {
    let mut mux = Mux::new();
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Request {
                session,
                id,
                method,
                token,
                layout,
            } => {
                let method = CLIENT_METHODS[usize::from(method) % CLIENT_METHODS.len()];
                let token = token.map(|t| t.text());
                let line = request_line(&id.text(), method, token.as_deref(), layout);
                up(
                    &mut mux,
                    &mut model,
                    u64::from(session) % SESSIONS,
                    line.as_bytes(),
                );
            }
            Op::Cancel {
                session,
                pick: which,
                other,
            } => {
                let s = u64::from(session) % SESSIONS;
                let own = model.of_session(s);
                let id = match which.and_then(|i| pick(&own, i)) {
                    Some(n) => model.pending[&n].id_text.clone(),
                    None => other.text(),
                };
                let line = format!(
                    "{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{{\"requestId\":{id},\"reason\":\"x\"}}}}"
                );
                up(&mut mux, &mut model, s, line.as_bytes());
            }
            Op::Initialized { session } => {
                let line = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
                up(&mut mux, &mut model, u64::from(session) % SESSIONS, line);
            }
            Op::ClientNotification { session, method } => {
                let m = CLIENT_METHODS[usize::from(method) % CLIENT_METHODS.len()];
                let line = format!("{{\"jsonrpc\":\"2.0\",\"method\":\"{m}\",\"params\":{{}}}}");
                up(
                    &mut mux,
                    &mut model,
                    u64::from(session) % SESSIONS,
                    line.as_bytes(),
                );
            }
            Op::ClientResponse { session, pick: i } => {
                let mut ids: Vec<String> = model.server_requests.keys().map(Id::to_json).collect();
                ids.sort();
                let id = pick(&ids.iter().map(String::as_str).collect::<Vec<_>>(), i)
                    .unwrap_or("\"none\"")
                    .to_owned();
                let line =
                    format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{\"roots\":[]}}}}");
                up(
                    &mut mux,
                    &mut model,
                    u64::from(session) % SESSIONS,
                    line.as_bytes(),
                );
            }
            Op::RawUp { session, line } => {
                up(
                    &mut mux,
                    &mut model,
                    u64::from(session) % SESSIONS,
                    line.as_bytes(),
                );
            }
            Op::Answer {
                pick: i,
                error,
                layout,
                batch,
            } => {
                let keys: Vec<i64> = model.pending.keys().copied().collect();
                let n = pick(&keys, i).unwrap_or(i64::from(i));
                let outcome = if error {
                    r#""error":{"code":-32601,"message":"no"}"#
                } else {
                    r#""result":{"content":[{"type":"text","text":"ok"}]}"#
                };
                let reply = if layout & 1 == 0 {
                    format!("{{\"jsonrpc\":\"2.0\",\"id\":{n},{outcome}}}")
                } else {
                    format!("{{ \"jsonrpc\" : \"2.0\" , {outcome} , \"id\" :  {n} }}")
                };
                let line = if batch {
                    format!(
                        "[{reply}, {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{{}}}}]"
                    )
                } else {
                    reply
                };
                down(&mut mux, &mut model, line.as_bytes());
            }
            Op::Progress { pick: i, layout } => {
                let keys: Vec<i64> = model.pending.keys().copied().collect();
                let n = pick(&keys, i).unwrap_or(i64::from(i));
                let line = if layout & 1 == 0 {
                    format!(
                        "{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"progressToken\":{n},\"progress\":1,\"total\":2}}}}"
                    )
                } else {
                    format!(
                        "{{\"params\":{{\"progress\":1, \"progressToken\" : {n}}},\"method\":\"notifications/progress\",\"jsonrpc\":\"2.0\"}}"
                    )
                };
                down(&mut mux, &mut model, line.as_bytes());
            }
            Op::ServerRequest { id, method } => {
                let m = SERVER_METHODS[usize::from(method) % SERVER_METHODS.len()];
                let line = format!(
                    "{{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"{m}\",\"params\":{{}}}}",
                    id.text()
                );
                down(&mut mux, &mut model, line.as_bytes());
            }
            Op::ServerCancel { pick: i, other } => {
                let mut ids: Vec<String> = model.server_requests.keys().map(Id::to_json).collect();
                ids.sort();
                let id = pick(&ids.iter().map(String::as_str).collect::<Vec<_>>(), i)
                    .map(str::to_owned)
                    .unwrap_or_else(|| other.text());
                let line = format!(
                    "{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{{\"requestId\":{id}}}}}"
                );
                down(&mut mux, &mut model, line.as_bytes());
            }
            Op::ServerNotification { method } => {
                let m = SERVER_METHODS[usize::from(method) % SERVER_METHODS.len()];
                let line = format!(
                    "{{\"jsonrpc\":\"2.0\",\"method\":\"{m}\",\"params\":{{\"level\":\"info\"}}}}"
                );
                down(&mut mux, &mut model, line.as_bytes());
            }
            Op::RawDown { line } => down(&mut mux, &mut model, line.as_bytes()),
            Op::EndSession { session } => {
                let s = u64::from(session) % SESSIONS;
                let got = mux.end_session(s);
                let mut want_cancel = Vec::new();
                for n in model.of_session(s) {
                    if model.pending.remove(&n).unwrap().cancellable {
                        want_cancel.push(n);
                    }
                }
                let mut orphans: Vec<Id> = model
                    .server_requests
                    .iter()
                    .filter(|(_, owner)| **owner == s)
                    .map(|(id, _)| id.clone())
                    .collect();
                orphans.sort_by_cached_key(Id::to_json);
                model.server_requests.retain(|_, owner| *owner != s);
                // The relay's unsubscribes for URIs only this session kept
                // come between the two (string ids, outside the upstream
                // space).
                let got: Vec<Vec<u8>> = got
                    .into_iter()
                    .filter(|m| {
                        let unsub = single(m).method_is("resources/unsubscribe");
                        assert!(!unsub || model.subscribed, "unsubscribe for nothing");
                        assert!(!unsub || single(m).id().is_some_and(|i| matches!(i, Id::Str(_))));
                        !unsub
                    })
                    .collect();
                assert_eq!(
                    got.len(),
                    want_cancel.len() + orphans.len(),
                    "end_session output"
                );
                for (msg, n) in got.iter().zip(&want_cancel) {
                    let env = single(msg);
                    assert!(env.method_is("notifications/cancelled"));
                    assert_eq!(env.param_id("requestId"), Some(Id::Num(*n)));
                }
                for (msg, id) in got[want_cancel.len()..].iter().zip(&orphans) {
                    let env = single(msg);
                    assert_eq!(env.kind(), Kind::Response);
                    assert_eq!(env.id().as_ref(), Some(id));
                }
            }
            Op::Expire {
                session,
                pick: which,
                other,
            } => {
                let s = u64::from(session) % SESSIONS;
                let own = model.of_session(s);
                let id = match which.and_then(|i| pick(&own, i)) {
                    Some(n) => model.pending[&n].id.clone(),
                    None => {
                        let text = other.text();
                        Id::from_raw(&*RawValue::from_string(text).unwrap())
                    }
                };
                let got = mux.expire(s, &id);
                match model.find(s, &id) {
                    Some(n) => {
                        let p = model.pending.remove(&n).unwrap();
                        match got {
                            Some(msg) => {
                                assert!(p.cancellable, "initialize cancelled");
                                assert_eq!(single(&msg).param_id("requestId"), Some(Id::Num(n)));
                            }
                            None => assert!(!p.cancellable, "expire sent no cancel"),
                        }
                    }
                    None => assert_eq!(got, None),
                }
            }
            Op::FailAll => {
                let got = mux.fail_all();
                let want: Vec<(SessionKey, Id)> = std::mem::take(&mut model.pending)
                    .into_values()
                    .map(|p| (p.session, p.id))
                    .collect();
                model.server_requests.clear();
                assert_eq!(got, want, "fail_all");
            }
        }
        model.check(&mux);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(mut ops) = Vec::<Op>::arbitrary(&mut u) else {
        return;
    };
    ops.truncate(256);
    run(ops);
});
