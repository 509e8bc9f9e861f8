//! One handshake-era client in front of a modern-only HTTP server
//! (`forward --url`, and one `reverse --url` session): the relay answers the
//! client's `initialize` from the server's `server/discover` result and
//! stamps each later request with the modern envelope and headers.
//!
//! ```text
//!  Off ── the client's initialize, server modern ──▶ Discovering ── modern result ──▶ Stamping
//!                                                        │ any other answer
//!                                                        ▼
//!                                                      Failed (the client's initialize
//!                                                      gets the server's error)
//! ```
//!
//! While discovering, the client's messages are held (at most
//! [`HOLD_CAP`] messages and [`HOLD_BYTES`] bytes, the bounds of
//! `link.rs`; past them a request is refused with `upstream_busy`, a
//! notification dropped). `Stamping`: `initialize` (again) is answered from
//! the same discover result, `notifications/initialized` dropped, `ping`
//! and `logging/setLevel` answered `{}` by the relay (the level is kept for
//! the stamps), `resources/subscribe`/`unsubscribe` answered `{}` by the
//! relay and folded into one `subscriptions/listen` it keeps open toward the
//! server (`Stamped::Listen`: the union of the URIs and every list-changed
//! kind; re-opened under a new id when the set changes, closed when it is
//! empty, at most [`MAX_SUBSCRIPTIONS`] URIs), the other requests stamped (`stamp::stamp_modern`) and sent with the modern headers
//! and no session. Results pass back unchanged: the 1.x clients accept the
//! extra `resultType`/`ttlMs`/`cacheScope` members (their result models
//! allow extra fields).

use std::collections::VecDeque;

use serde_json::{Value, json};

use super::convert::{self, DiscoverOutcome};
use super::link::{HOLD_BYTES, HOLD_CAP};
use super::listen::LegacySubscriptions;
use super::stamp::{Headers, StampContext, TowardModern, stamp_modern, toward_modern};
use super::stamper_input::{self, StamperInput};
use crate::proto::errors::RelayError;
use crate::proto::jsonrpc::{self, Id};

/// The HTTP headers of a modern message, derived from its body
/// (`MCP-Protocol-Version` from the envelope, `Mcp-Method`, `Mcp-Name`
/// encoded as `=?base64?…?=` when not plain ASCII): `None` when the line
/// carries no envelope naming a modern revision (the handshake headers
/// apply). The body is parsed only when it mentions the reserved key.
pub fn modern_headers(line: &[u8]) -> Option<Headers> {
    memchr::memmem::find(line, super::META_PROTOCOL_VERSION.as_bytes())?;
    let v: Value = serde_json::from_slice(line).ok()?;
    let method = v.get("method")?.as_str()?;
    let params = v.get("params");
    let version = params?
        .get("_meta")?
        .get(super::META_PROTOCOL_VERSION)?
        .as_str()?;
    if !super::is_modern(version) {
        return None;
    }
    Some(super::classify::headers_for(version, method, params))
}

/// Whether a message on the relay's listen is its acknowledgement, which a
/// handshake-era client has no use for (dropped).
pub fn is_listen_ack(line: &[u8]) -> bool {
    memchr::memmem::find(line, b"notifications/subscriptions/acknowledged").is_some()
        && matches!(
            crate::proto::jsonrpc::peek(line),
            Ok(crate::proto::jsonrpc::Message::Single(env))
                if env.method_is("notifications/subscriptions/acknowledged")
        )
}

/// Id of the relay's own `server/discover` on behalf of the client.
pub const DISCOVER_ID: &str = "mcp-relay-era-discover";

/// Prefix of the ids of the relay's own `subscriptions/listen` requests.
pub const LISTEN_ID_PREFIX: &str = "mcp-relay-listen-";

/// URIs one handshake-era client may have subscribed at once; past it a
/// `resources/subscribe` is refused (-32602).
pub const MAX_SUBSCRIPTIONS: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub enum StamperState {
    /// Not bridging: messages pass as they are.
    Off,
    /// The relay's discover is out; `init` is the client's `initialize`.
    Discovering {
        init: Id,
        requested: Option<String>,
        ctx: StampContext,
    },
    /// The server is modern: requests are stamped.
    Stamping { discover: Value, ctx: StampContext },
    /// The server did not answer discover as a modern server: the client's
    /// `initialize` got its error; later messages pass as they are.
    Failed,
}

/// What the front does with a client message.
#[derive(Debug, PartialEq)]
pub enum Stamped {
    /// Not the stamper's: send it as it is.
    Pass,
    /// Send these bytes with these extra headers (and no session).
    Send(Vec<u8>, Headers),
    /// The relay's own discover goes out; the message (the client's
    /// `initialize`) is answered once it returns.
    SendOwn(Vec<u8>, Headers),
    /// Held until discover returns.
    Held,
    /// Answer the client with this line.
    Answer(Vec<u8>),
    /// Nothing to send or answer.
    Drop,
    /// `resources/subscribe` or `unsubscribe` changed the client's set:
    /// answer it with `answer`, end the relay's listen `close` (closing its
    /// response stream), and open `open` (a long-lived request: no response
    /// timeout) when there is anything left to listen for.
    Listen {
        answer: Vec<u8>,
        close: Option<Id>,
        open: Option<(Id, Vec<u8>, Headers)>,
    },
    /// An input round of the server's (`stamper_input.rs`): requests to the
    /// client, the call's retry, or its answer by the relay.
    Input(stamper_input::Out),
}

/// What the discover answer released.
#[derive(Debug, Default, PartialEq)]
pub struct Discovered {
    /// The answer to the client's `initialize`: (its id, the line).
    pub answer: Option<(Id, Vec<u8>)>,
    /// Held client messages, in order, to route again.
    pub released: Vec<Vec<u8>>,
}

pub struct Stamper {
    state: StamperState,
    /// Names the server when its discover result does not.
    name: String,
    held: VecDeque<Vec<u8>>,
    held_bytes: usize,
    /// Messages refused because the hold was full (for the log line and
    /// the metric).
    pub refused: u64,
    /// Stamping: the client's `resources/subscribe` URIs, and the relay's
    /// listen open for them.
    subs: LegacySubscriptions,
    listen: Option<Id>,
    listens: u64,
    /// `resources/subscribe` refused past [`MAX_SUBSCRIPTIONS`] (for the
    /// log line and the metric).
    pub subs_refused: u64,
    /// The server's `InputRequiredResult`s carried to the client.
    pub input: StamperInput,
}

impl Stamper {
    pub fn new(name: &str) -> Stamper {
        Stamper {
            state: StamperState::Off,
            name: name.to_string(),
            held: VecDeque::new(),
            held_bytes: 0,
            refused: 0,
            subs: LegacySubscriptions::default(),
            listen: None,
            listens: 0,
            subs_refused: 0,
            input: StamperInput::new(stamper_input::Limits::default()),
        }
    }

    /// Whether `id` names one of the relay's own listens (its answer, the
    /// end of that listen, is the relay's).
    pub fn is_own_listen(id: &Id) -> bool {
        matches!(id, Id::Str(s) if s.starts_with(LISTEN_ID_PREFIX))
    }

    /// The relay's listen open now, if any.
    pub fn listening(&self) -> Option<&Id> {
        self.listen.as_ref()
    }

    pub fn state(&self) -> &StamperState {
        &self.state
    }

    /// Whether client messages go through [`Stamper::on_client`].
    pub fn active(&self) -> bool {
        matches!(
            self.state,
            StamperState::Discovering { .. } | StamperState::Stamping { .. }
        )
    }

    pub fn stamping(&self) -> bool {
        matches!(self.state, StamperState::Stamping { .. })
    }

    /// The client's `initialize` (`params` raw) toward a server known or
    /// configured to be modern: the relay's own discover to send.
    pub fn begin(&mut self, id: &Id, params: Option<&str>) -> Stamped {
        let params: Value = params
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or(Value::Null);
        let requested = params
            .get("protocolVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        let ctx = StampContext::from_initialize(&params);
        self.input.declare(&ctx.capabilities);
        if !self.set(StamperState::Discovering {
            init: id.clone(),
            requested,
            ctx,
        }) {
            return Stamped::Pass;
        }
        let line = convert::discover_request(DISCOVER_ID);
        let headers = super::classify::headers_for(super::MODERN_VERSION, "server/discover", None);
        Stamped::SendOwn(line, headers)
    }

    /// Whether `id` is the relay's own discover.
    pub fn is_own(id: &Id) -> bool {
        matches!(id, Id::Str(s) if &**s == DISCOVER_ID)
    }

    /// The answer to the relay's discover: a JSON-RPC response line (a
    /// transport failure is passed as an error response by the front).
    pub fn on_discover(&mut self, line: &[u8]) -> Discovered {
        let StamperState::Discovering {
            init,
            requested,
            ctx,
        } = self.state.clone()
        else {
            return Discovered::default();
        };
        let v: Value = serde_json::from_slice(line).unwrap_or(Value::Null);
        let outcome = convert::read_discover(v.get("result"), v.get("error"));
        let mut out = Discovered::default();
        let result = match outcome {
            DiscoverOutcome::Modern { result, .. } => {
                convert::initialize_from_discover(&result, requested.as_deref(), &self.name)
                    .map(|r| (r, result))
            }
            _ => None,
        };
        match result {
            Some((init_result, discover)) => {
                out.answer = Some((init.clone(), answer(&init, &init_result)));
                self.set(StamperState::Stamping { discover, ctx });
            }
            None => {
                let err = v.get("error").cloned().unwrap_or(Value::Null);
                let code = err
                    .get("code")
                    .and_then(Value::as_i64)
                    .unwrap_or(RelayError::UpstreamStatus.code());
                let msg = err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("the server did not answer server/discover as a 2026-07-28 server");
                out.answer = Some((
                    init.clone(),
                    jsonrpc::error_response(
                        Some(&init),
                        code,
                        msg,
                        crate::proto::object::object([("kind", serde_json::Value::from("era"))]),
                    ),
                ));
                self.set(StamperState::Failed);
            }
        }
        self.held_bytes = 0;
        out.released = self.held.drain(..).collect();
        out
    }

    /// A client message while active: `method` and `params` (raw) of a
    /// request or notification, `id` of a request.
    pub fn on_client(
        &mut self,
        line: &[u8],
        method: Option<&str>,
        params: Option<&str>,
        id: Option<&Id>,
    ) -> Stamped {
        let (discover, ctx) = match &mut self.state {
            StamperState::Off | StamperState::Failed => return Stamped::Pass,
            StamperState::Discovering { .. } => return self.hold(line, id),
            StamperState::Stamping { discover, ctx } => (discover, ctx),
        };
        let Some(method) = method else {
            // A response: a modern server sends the client no requests; the
            // relay does (`stamper_input`).
            let rid = match crate::proto::jsonrpc::peek(line) {
                Ok(crate::proto::jsonrpc::Message::Single(env)) => env.id(),
                _ => None,
            };
            return match rid.and_then(|rid| self.input.on_response(&rid, line)) {
                Some(out) => Stamped::Input(out),
                None => Stamped::Drop,
            };
        };
        let Some(id) = id else {
            // Notifications: a modern server acknowledges and drops them
            // (cancellation is the front's: it ends the exchange; the
            // relay's own requests for a cancelled call are cancelled).
            if method == "notifications/cancelled"
                && let Some(rid) = params
                    .and_then(|p| serde_json::from_str::<Value>(p).ok())
                    .and_then(|p| p.get("requestId").cloned())
                    .map(|r| Id::from_value(&r))
            {
                let to_client = self.input.cancel(&rid);
                if !to_client.is_empty() {
                    return Stamped::Input(stamper_input::Out {
                        to_client,
                        ..Default::default()
                    });
                }
            }
            return Stamped::Drop;
        };
        let parsed = || -> Value {
            params
                .and_then(|p| serde_json::from_str(p).ok())
                .unwrap_or(Value::Null)
        };
        match toward_modern(method) {
            TowardModern::AnswerInitialize => {
                let p = parsed();
                let requested = p.get("protocolVersion").and_then(Value::as_str);
                *ctx = StampContext::from_initialize(&p);
                self.input.declare(&ctx.capabilities);
                match convert::initialize_from_discover(discover, requested, &self.name) {
                    Some(r) => Stamped::Answer(answer(id, &r)),
                    None => Stamped::Answer(refuse(id, -32603, "no capabilities in discover")),
                }
            }
            TowardModern::Drop => Stamped::Drop,
            TowardModern::AnswerEmpty => Stamped::Answer(answer(id, &json!({}))),
            TowardModern::SetLevel => {
                ctx.set_level(Some(&parsed()));
                Stamped::Answer(answer(id, &json!({})))
            }
            how @ (TowardModern::Subscribe | TowardModern::Unsubscribe) => {
                let p = parsed();
                let Some(uri) = p.get("uri").and_then(Value::as_str) else {
                    return Stamped::Answer(refuse(
                        id,
                        super::INVALID_PARAMS,
                        "params.uri must be a string",
                    ));
                };
                let changed = if matches!(how, TowardModern::Subscribe) {
                    match self.subs.subscribe(uri, MAX_SUBSCRIPTIONS) {
                        Ok(c) => c,
                        Err(r) => {
                            self.subs_refused += 1;
                            return Stamped::Answer(refuse(id, super::INVALID_PARAMS, r.message()));
                        }
                    }
                } else {
                    self.subs.unsubscribe(uri)
                };
                let answer = answer(id, &json!({}));
                if !changed {
                    return Stamped::Answer(answer);
                }
                let close = self.listen.take();
                let mut open = None;
                if !self.subs.is_empty() {
                    self.listens += 1;
                    let lid = format!("{LISTEN_ID_PREFIX}{}", self.listens);
                    let req = json!({"jsonrpc": "2.0", "id": lid, "method": "subscriptions/listen",
                                     "params": {"notifications": self.subs.filter()}});
                    if let Ok((bytes, headers)) = stamp_modern(req.to_string().as_bytes(), ctx) {
                        let lid = Id::Str(lid.into());
                        self.listen = Some(lid.clone());
                        open = Some((lid, bytes, headers));
                    }
                }
                Stamped::Listen {
                    answer,
                    close,
                    open,
                }
            }
            TowardModern::Forward => match stamp_modern(line, ctx) {
                Ok((bytes, headers)) => {
                    self.input.sent(id, method, &bytes);
                    Stamped::Send(bytes, headers)
                }
                Err(_) => Stamped::Answer(refuse(
                    id,
                    super::INVALID_PARAMS,
                    "params and params._meta must be objects",
                )),
            },
        }
    }

    /// The server answered the client's request `id` with `line`: `Some`
    /// when it was an input round the relay carries (or refuses).
    pub fn on_result(
        &mut self,
        id: &Id,
        line: &[u8],
        now: std::time::Instant,
    ) -> Option<stamper_input::Out> {
        if !self.stamping() {
            return None;
        }
        self.input.on_result(id, line, now)
    }

    fn hold(&mut self, line: &[u8], id: Option<&Id>) -> Stamped {
        if self.held.len() >= HOLD_CAP || self.held_bytes + line.len() > HOLD_BYTES {
            self.refused += 1;
            return match id {
                Some(id) => Stamped::Answer(jsonrpc::error_response(
                    Some(id),
                    RelayError::UpstreamBusy.code(),
                    "The relay is asking the server for server/discover; too many messages wait",
                    crate::proto::object::object([(
                        "kind",
                        serde_json::Value::from("upstream_busy"),
                    )]),
                )),
                None => Stamped::Drop,
            };
        }
        self.held_bytes += line.len();
        self.held.push_back(line.to_vec());
        Stamped::Held
    }

    /// The one place the state changes; false when the move is illegal.
    fn set(&mut self, to: StamperState) -> bool {
        use StamperState::*;
        let ok = matches!(
            (&self.state, &to),
            (Off, Discovering { .. }) | (Discovering { .. }, Stamping { .. } | Failed)
        );
        debug_assert!(ok, "era stamper: illegal move {:?} → {:?}", self.state, to);
        if !ok {
            crate::log_error!("era stamper: illegal move refused");
            return false;
        }
        self.state = to;
        true
    }
}

fn answer(id: &Id, result: &Value) -> Vec<u8> {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{result}}}",
        id.to_json()
    )
    .into_bytes()
}

fn refuse(id: &Id, code: i64, message: &str) -> Vec<u8> {
    jsonrpc::error_response(Some(id), code, message, Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init_params() -> &'static str {
        r#"{"protocolVersion":"2025-06-18","capabilities":{"sampling":{}},"clientInfo":{"name":"old","version":"1"}}"#
    }

    fn discover_ok() -> Vec<u8> {
        json!({"jsonrpc":"2.0","id":DISCOVER_ID,"result":{
            "supportedVersions":["2026-07-28"],"capabilities":{"tools":{}},
            "ttlMs":0,"cacheScope":"private","resultType":"complete",
            "_meta":{"io.modelcontextprotocol/serverInfo":{"name":"modern","version":"2"}}}})
        .to_string()
        .into_bytes()
    }

    fn v(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn modern_headers_come_from_the_body_and_only_for_modern_lines() {
        let call = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"caf\u00e9","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
        let h = modern_headers(call).unwrap();
        assert!(h.contains(&("mcp-protocol-version".into(), "2026-07-28".into())));
        assert!(h.contains(&("mcp-method".into(), "tools/call".into())));
        assert!(h.contains(&("mcp-name".into(), "=?base64?Y2Fmw6k=?=".into())));
        let old = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2025-11-25"}}}"#;
        assert_eq!(modern_headers(old), None);
        assert_eq!(
            modern_headers(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
            None
        );
    }

    #[test]
    fn initialize_is_answered_from_discover_and_requests_are_stamped() {
        let mut s = Stamper::new("up");
        let Stamped::SendOwn(line, headers) = s.begin(&Id::Num(1), Some(init_params())) else {
            panic!("no discover")
        };
        assert_eq!(v(&line)["method"], "server/discover");
        assert!(headers.contains(&("mcp-method".into(), "server/discover".into())));
        let call = br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;
        assert_eq!(
            s.on_client(call, Some("tools/call"), None, Some(&Id::Num(2))),
            Stamped::Held
        );
        let d = s.on_discover(&discover_ok());
        let (id, ans) = d.answer.unwrap();
        assert_eq!(id, Id::Num(1));
        let ans = v(&ans);
        assert_eq!(ans["result"]["protocolVersion"], "2025-06-18");
        assert_eq!(ans["result"]["serverInfo"]["name"], "modern");
        assert_eq!(d.released, vec![call.to_vec()]);
        let Stamped::Send(out, headers) =
            s.on_client(call, Some("tools/call"), None, Some(&Id::Num(2)))
        else {
            panic!("not stamped")
        };
        let out = v(&out);
        assert_eq!(
            out["params"]["_meta"]["io.modelcontextprotocol/clientInfo"]["name"],
            "old"
        );
        assert!(headers.contains(&("mcp-name".into(), "echo".into())));
        assert!(headers.contains(&("mcp-protocol-version".into(), "2026-07-28".into())));
    }

    #[test]
    fn the_handshake_only_methods_are_answered_by_the_relay() {
        let mut s = Stamper::new("up");
        s.begin(&Id::Num(1), Some(init_params()));
        s.on_discover(&discover_ok());
        let n = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        assert_eq!(
            s.on_client(n, Some("notifications/initialized"), None, None),
            Stamped::Drop
        );
        let ping = br#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#;
        let Stamped::Answer(a) = s.on_client(ping, Some("ping"), None, Some(&Id::Num(3))) else {
            panic!()
        };
        assert_eq!(v(&a)["result"], json!({}));
        let lvl =
            br#"{"jsonrpc":"2.0","id":4,"method":"logging/setLevel","params":{"level":"debug"}}"#;
        s.on_client(
            lvl,
            Some("logging/setLevel"),
            Some(r#"{"level":"debug"}"#),
            Some(&Id::Num(4)),
        );
        let list = br#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#;
        let Stamped::Send(out, _) = s.on_client(list, Some("tools/list"), None, Some(&Id::Num(5)))
        else {
            panic!()
        };
        assert_eq!(
            v(&out)["params"]["_meta"]["io.modelcontextprotocol/logLevel"],
            "debug"
        );
    }

    fn subscription(s: &mut Stamper, id: i64, method: &str, uri: &str) -> Stamped {
        let params = json!({ "uri": uri }).to_string();
        let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {"uri": uri}});
        s.on_client(
            line.to_string().as_bytes(),
            Some(method),
            Some(&params),
            Some(&Id::Num(id)),
        )
    }

    #[test]
    fn subscriptions_fold_into_one_listen_reopened_when_they_change() {
        let mut s = Stamper::new("up");
        s.begin(&Id::Num(1), Some(init_params()));
        s.on_discover(&discover_ok());
        let Stamped::Listen {
            answer,
            close: None,
            open: Some((l1, bytes, headers)),
        } = subscription(&mut s, 2, "resources/subscribe", "file:///a")
        else {
            panic!("no listen")
        };
        assert_eq!(v(&answer), json!({"jsonrpc": "2.0", "id": 2, "result": {}}));
        assert!(Stamper::is_own_listen(&l1));
        let req = v(&bytes);
        assert_eq!(req["method"], "subscriptions/listen");
        assert_eq!(
            req["params"]["notifications"]["resourceSubscriptions"],
            json!(["file:///a"])
        );
        assert_eq!(req["params"]["notifications"]["toolsListChanged"], true);
        assert_eq!(
            req["params"]["_meta"]["io.modelcontextprotocol/clientInfo"]["name"],
            "old"
        );
        assert!(headers.contains(&("mcp-method".into(), "subscriptions/listen".into())));
        // The same URI again changes nothing: answered, no new listen.
        assert!(matches!(
            subscription(&mut s, 3, "resources/subscribe", "file:///a"),
            Stamped::Answer(_)
        ));
        let Stamped::Listen {
            close: Some(c),
            open: Some((l2, bytes, _)),
            ..
        } = subscription(&mut s, 4, "resources/subscribe", "file:///b")
        else {
            panic!("not re-opened")
        };
        assert_eq!(c, l1);
        assert_ne!(l2, l1);
        assert_eq!(
            v(&bytes)["params"]["notifications"]["resourceSubscriptions"],
            json!(["file:///a", "file:///b"])
        );
        assert_eq!(s.listening(), Some(&l2));
        let Stamped::Listen {
            open: Some((l3, ..)),
            ..
        } = subscription(&mut s, 5, "resources/unsubscribe", "file:///a")
        else {
            panic!()
        };
        let Stamped::Listen {
            close: Some(c),
            open: None,
            ..
        } = subscription(&mut s, 6, "resources/unsubscribe", "file:///b")
        else {
            panic!("not closed")
        };
        assert_eq!(c, l3);
        assert_eq!(s.listening(), None);
        // Not subscribed: answered, nothing else.
        assert!(matches!(
            subscription(&mut s, 7, "resources/unsubscribe", "file:///b"),
            Stamped::Answer(_)
        ));
    }

    #[test]
    fn subscriptions_are_bounded_and_need_a_uri() {
        let mut s = Stamper::new("up");
        s.begin(&Id::Num(1), Some(init_params()));
        s.on_discover(&discover_ok());
        for i in 0..MAX_SUBSCRIPTIONS {
            let d = subscription(&mut s, 10, "resources/subscribe", &format!("file:///{i}"));
            assert!(matches!(d, Stamped::Listen { .. }), "{i}");
        }
        let Stamped::Answer(a) = subscription(&mut s, 11, "resources/subscribe", "file:///x")
        else {
            panic!()
        };
        assert_eq!(v(&a)["error"]["code"], -32602);
        let none = br#"{"jsonrpc":"2.0","id":12,"method":"resources/subscribe"}"#;
        let Stamped::Answer(a) =
            s.on_client(none, Some("resources/subscribe"), None, Some(&Id::Num(12)))
        else {
            panic!()
        };
        assert_eq!(v(&a)["error"]["code"], -32602);
    }

    #[test]
    fn a_server_that_refuses_discover_fails_the_initialize_and_the_rest_passes() {
        let mut s = Stamper::new("up");
        s.begin(&Id::Num(1), Some(init_params()));
        let err = br#"{"jsonrpc":"2.0","id":"mcp-relay-era-discover","error":{"code":-32600,"message":"no"}}"#;
        let d = s.on_discover(err);
        let (_, a) = d.answer.unwrap();
        assert_eq!(v(&a)["error"]["code"], -32600);
        assert_eq!(*s.state(), StamperState::Failed);
        assert_eq!(
            s.on_client(b"{}", Some("tools/list"), None, Some(&Id::Num(2))),
            Stamped::Pass
        );
    }

    #[test]
    fn an_input_round_goes_to_the_client_and_its_answer_retries_the_call() {
        let now = std::time::Instant::now();
        let mut s = Stamper::new("up");
        let init = r#"{"protocolVersion":"2025-06-18","capabilities":{"elicitation":{}},"clientInfo":{"name":"old","version":"1"}}"#;
        s.begin(&Id::Num(1), Some(init));
        s.on_discover(&discover_ok());
        let call = br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"ask"}}"#;
        assert!(matches!(
            s.on_client(call, Some("tools/call"), None, Some(&Id::Num(2))),
            Stamped::Send(..)
        ));
        let ir = br#"{"jsonrpc":"2.0","id":2,"result":{"resultType":"input_required","requestState":"s","inputRequests":{"k":{"method":"elicitation/create","params":{"message":"m"}}}}}"#;
        let out = s.on_result(&Id::Num(2), ir, now).expect("a round");
        let ask = v(&out.to_client[0]);
        let answer =
            json!({"jsonrpc": "2.0", "id": ask["id"], "result": {"action": "accept"}}).to_string();
        let Stamped::Input(out) = s.on_client(answer.as_bytes(), None, None, None) else {
            panic!("the answer is the relay's")
        };
        let (id, retry) = out.retry.expect("retried");
        assert_eq!(id, Id::Num(2));
        assert_eq!(
            v(&retry)["params"]["inputResponses"]["k"]["action"],
            "accept"
        );
        // Another response is not the relay's: dropped as before.
        let other = br#"{"jsonrpc":"2.0","id":"x","result":{}}"#;
        assert_eq!(s.on_client(other, None, None, None), Stamped::Drop);
    }

    #[test]
    fn the_hold_is_bounded() {
        let mut s = Stamper::new("up");
        s.begin(&Id::Num(1), Some(init_params()));
        for i in 0..HOLD_CAP as i64 {
            assert_eq!(
                s.on_client(b"{}", Some("tools/list"), None, Some(&Id::Num(i + 10))),
                Stamped::Held
            );
        }
        let Stamped::Answer(a) = s.on_client(b"{}", Some("tools/list"), None, Some(&Id::Num(9)))
        else {
            panic!("past the cap")
        };
        assert_eq!(v(&a)["error"]["code"], RelayError::UpstreamBusy.code());
        assert_eq!(s.refused, 1);
    }
}
