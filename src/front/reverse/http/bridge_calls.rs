//! `reverse --url`, relay-owned sessions: the 2026-07-28 requests out on
//! them, and what the handshake-era server sends back (docs/eras.md, "Over
//! HTTP").
//!
//! Each bridged request goes to the server under an id of the relay's own
//! (`mcp-relay-b-N`): clients of one identity share the session and may use
//! the same ids at once. What the server sends is routed by that id, from a
//! call's response stream or from the session's GET stream alike:
//!
//! - a reply goes to the call's open leg with the client's id, made modern;
//! - a request (elicitation, sampling, roots) is carried as an
//!   `InputRequiredResult` round (`era/input.rs`, the bridge key as the
//!   owner) of the call whose stream it came on, or, on the GET stream, of
//!   the one call of the session in flight that may carry input; with none
//!   or several, the relay answers it with an error (counted,
//!   `unattributed_request`);
//! - `notifications/message` reaches the leg only if the call opted in at
//!   or below its level (`era/loglevel.rs`); progress and other
//!   notifications on a call's stream go to its leg; notifications on the
//!   GET stream that no single call owns are dropped (counted).
//!
//! A leg answered `input_required` lets go of the call (its stateless
//! session ends; the call stays open at the server); the client's retry,
//! naming the round's `requestState`, becomes the call's leg. A leg whose
//! client goes away gives the call up (`notifications/cancelled` to the
//! server).

use serde_json::Value;

use super::bridge::Call;
use super::*;
use crate::mcp::era::input::{self, Asked, Out, Retried};
use crate::mcp::era::loglevel::{self, Level};
use crate::mcp::era::stamp::modern_response;
use crate::proto::jsonrpc::{Dropped, Kind, Message};

// `input::Bridge<()>`: one per bridge key, so a token is only known to the
// identity whose call it belongs to.

/// A 2026-07-28 request for a ready bridge, as `http_bridge_route` read it.
pub(super) struct BridgedCall<'a> {
    pub(super) key: String,
    pub(super) method: String,
    pub(super) log: Option<Level>,
    /// The request's raw `params` (a retry's `requestState` and
    /// `inputResponses`).
    pub(super) params: Option<&'a str>,
}

const LEG_PREFIX: &str = "mcp-relay-leg-";

/// Exchanges out to one upstream past which a relay-owned session's server
/// requests get no answer from the relay (each answer is a POST): a server
/// flooding requests cannot make the relay queue POSTs without bound. The
/// request is dropped (counted `era_server_requests`, a warning line).
pub(super) const MAX_EXCHANGES_FOR_ANSWERS: usize = 4096;

/// The input bridge's name for the leg on stateless session `skey`.
fn leg_id(skey: SKey) -> Id {
    Id::Str(format!("{LEG_PREFIX}{skey}").into())
}

fn leg_skey(leg: &Id) -> Option<SKey> {
    match leg {
        Id::Str(s) => s.strip_prefix(LEG_PREFIX)?.parse().ok(),
        _ => None,
    }
}

/// `line` (a JSON-RPC message) with its id replaced by `id`; `None` when it
/// is not a JSON object.
fn with_id(line: &[u8], id: &Id) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(line).ok()?;
    let idv: Value = serde_json::from_str(&id.to_json()).ok()?;
    v.as_object_mut()?.insert("id".into(), idv);
    Some(v.to_string().into_bytes())
}

fn is_input_required(line: &[u8]) -> bool {
    serde_json::from_slice::<Value>(line)
        .ok()
        .is_some_and(|v| v.pointer("/result/resultType") == Some(&Value::from("input_required")))
}

impl Reverse {
    /// POSTs `line` on ready bridge `key`'s session (`request`: the relay's
    /// id for it, when it is a request).
    pub(super) fn http_bridge_post(
        &mut self,
        u: usize,
        key: &str,
        line: Vec<u8>,
        request: Option<Id>,
    ) -> Option<ExId> {
        let (sid, version) = self.ups[u].http()?.bridges.session_of(key)?;
        let mut headers = vec![
            (
                "accept".to_string(),
                "application/json, text/event-stream".to_string(),
            ),
            ("content-type".into(), "application/json".into()),
        ];
        if let Some(s) = sid {
            headers.push(("mcp-session-id".into(), s));
        }
        headers.push(("mcp-protocol-version".into(), version));
        let now = self.now;
        let reg = self.poll.registry();
        let h = self.ups[u].http_mut()?;
        let req = Request::post(h.url.target.clone(), headers, line);
        let ex = h.client.submit(req, reg, now);
        let skey = crate::front::reverse::session::skey_new(u, 0);
        let carry = Carry::BridgePost {
            request,
            key: key.to_string(),
        };
        h.carries.insert(ex, (skey, carry));
        Some(ex)
    }

    /// A request of a client (stateless session `skey`, its id `id`) on a
    /// ready bridge: a retry naming an input round, or a new call.
    pub(super) fn http_bridge_call(
        &mut self,
        skey: SKey,
        id: &Id,
        stripped: &[u8],
        call: BridgedCall<'_>,
    ) {
        let u = up_of(skey);
        let now = self.now;
        let carries_input = input::carries_input(&call.method);
        if carries_input
            && let Some(p) = call
                .params
                .filter(|p| p.contains("requestState"))
                .and_then(|p| serde_json::from_str::<Value>(p).ok())
                .filter(|p| p.get("requestState").is_some())
        {
            let Some(h) = self.ups[u].http_mut() else {
                return;
            };
            let b = &mut h.bridges;
            let leg = leg_id(skey);
            let retried = match b.inputs.get_mut(&call.key) {
                Some(i) => i.on_client_retry(&(), &leg, &p, now),
                None => Retried::Unknown,
            };
            match retried {
                Retried::Unknown => {
                    let e = jsonrpc::error_response(
                        Some(id),
                        crate::mcp::era::INVALID_PARAMS,
                        "unknown or expired requestState",
                        Value::Null,
                    );
                    self.on_session_line(skey, &e);
                }
                Retried::Carried(mut out) => {
                    // The retry is the call's leg from now on.
                    let up = b
                        .inputs
                        .get(&call.key)
                        .and_then(|i| i.upstream_of(&leg))
                        .cloned();
                    let mut mine = Vec::new();
                    match up {
                        Some(up) => {
                            if let Some(c) = b.calls.get_mut(&up) {
                                c.leg = Some((skey, id.clone()));
                                b.by_skey.insert(skey, up);
                            }
                        }
                        None => {
                            // The call is over already (it finished while
                            // the client was answering, or was given up):
                            // its last word is for this retry.
                            let (m, rest) = std::mem::take(&mut out.to_client)
                                .into_iter()
                                .partition(|(l, _)| *l == leg);
                            mine = m;
                            out.to_client = rest;
                        }
                    }
                    self.http_bridge_apply(u, &call.key, out);
                    for (_, line) in mine {
                        match with_id(&line, id) {
                            Some(line) => self.on_session_line(skey, &line),
                            None => self.fail_request(
                                skey,
                                id,
                                RelayError::InvalidReply,
                                "The server's reply is not a JSON object",
                                json!({}),
                            ),
                        }
                    }
                }
            }
            return;
        }
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        let b = &mut h.bridges;
        b.call_seq += 1;
        let up = Id::Str(format!("mcp-relay-b-{}", b.call_seq).into());
        let Some(line) = with_id(stripped, &up) else {
            let e = jsonrpc::error_response(
                Some(id),
                crate::mcp::era::INVALID_REQUEST,
                "the request is not a JSON object",
                Value::Null,
            );
            self.on_session_line(skey, &e);
            return;
        };
        b.calls.insert(
            up.clone(),
            Call {
                key: call.key.clone(),
                leg: Some((skey, id.clone())),
                log: call.log,
                carries_input,
                ex: None,
            },
        );
        b.by_skey.insert(skey, up.clone());
        if let Some(ex) = self.http_bridge_post(u, &call.key, line, Some(up.clone()))
            && let Some(h) = self.ups[u].http_mut()
        {
            if let Some(c) = h.bridges.calls.get_mut(&up) {
                c.ex = Some(ex);
            }
            h.stateless.insert(skey, ex);
        }
    }

    /// A message from bridge `key`'s server: on the response stream of the
    /// call `on` (its id at the server), or on the GET stream (`None`).
    pub(super) fn http_bridge_up_message(
        &mut self,
        u: usize,
        key: &str,
        on: Option<&Id>,
        data: &[u8],
    ) {
        let Ok(Message::Single(env)) = jsonrpc::peek(data) else {
            crate::log_debug!(
                "[{}] message on a relay-owned session that is no single JSON-RPC message \
                 dropped",
                self.ups[u].cfg.name
            );
            return;
        };
        match env.kind() {
            Kind::Response => {
                if let Some(up) = env.id() {
                    self.http_bridge_reply(u, key, &up, data);
                }
            }
            Kind::Request => {
                let (Some(sid), Some(method)) = (env.id(), env.method()) else {
                    return;
                };
                let params: Option<Value> =
                    env.params.and_then(|p| serde_json::from_str(p.get()).ok());
                self.http_bridge_server_request(u, key, on, sid, &method, params.as_ref());
            }
            Kind::Notification => {
                if let Some(m) = env.method() {
                    let params: Option<Value> =
                        env.params.and_then(|p| serde_json::from_str(p.get()).ok());
                    if self.http_bridge_listen_event(u, key, &m, params.as_ref()) {
                        return;
                    }
                }
                let carrier = match on {
                    Some(up) => Some(up.clone()),
                    None => self.http_bridge_only_call(u, key, false),
                };
                let leg = carrier.as_ref().and_then(|up| {
                    let c = self.ups[u].http()?.bridges.calls.get(up)?;
                    Some((c.leg.clone(), c.log))
                });
                if env.method_is("notifications/message") {
                    let params: Option<Value> =
                        env.params.and_then(|p| serde_json::from_str(p.get()).ok());
                    let level = loglevel::message_level(params.as_ref());
                    let opt_in = leg.as_ref().and_then(|(_, l)| *l);
                    if !loglevel::deliver(opt_in, level) {
                        self.dropped(u, Dropped::LogNotOptedIn);
                        return;
                    }
                }
                match leg {
                    Some((Some((skey, _)), _)) => self.on_session_line(skey, data),
                    _ => self.dropped(u, Dropped::Unattributed),
                }
            }
            Kind::Invalid => {}
        }
    }

    /// The server answered the call `up` (its id at the server).
    fn http_bridge_reply(&mut self, u: usize, key: &str, up: &Id, data: &[u8]) {
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        if let Some(out) = h
            .bridges
            .inputs
            .get_mut(key)
            .and_then(|i| i.on_server_response(up, data))
        {
            self.http_bridge_apply(u, key, out);
            return;
        }
        if crate::mcp::era::listen::Listeners::<SKey>::is_own(up) {
            // The answer to the relay's own subscribe or unsubscribe.
            return;
        }
        let Some(call) = h.bridges.calls.remove(up) else {
            crate::log_debug!(
                "[{}] reply to {up} on a relay-owned session dropped: no such request out",
                self.ups[u].cfg.name
            );
            return;
        };
        let Some((skey, client)) = call.leg else {
            return;
        };
        h.bridges.by_skey.remove(&skey);
        let line = modern_response(data).unwrap_or_else(|| data.to_vec());
        match with_id(&line, &client) {
            Some(line) => self.on_session_line(skey, &line),
            None => self.fail_request(
                skey,
                &client,
                RelayError::InvalidReply,
                "The server's reply is not a JSON object",
                json!({}),
            ),
        }
    }

    /// The one call of bridge `key` in flight (`input`: that may carry
    /// input), if there is exactly one.
    fn http_bridge_only_call(&self, u: usize, key: &str, input: bool) -> Option<Id> {
        let b = &self.ups[u].http()?.bridges;
        let mut it = b
            .calls
            .iter()
            .filter(|(_, c)| c.key == key && (!input || c.carries_input))
            .map(|(up, _)| up);
        let first = it.next()?;
        it.next().is_none().then(|| first.clone())
    }

    /// A request from bridge `key`'s server to the client.
    fn http_bridge_server_request(
        &mut self,
        u: usize,
        key: &str,
        on: Option<&Id>,
        sid: Id,
        method: &str,
        params: Option<&Value>,
    ) {
        let now = self.now;
        let busy = self.ups[u]
            .http()
            .is_some_and(|h| h.client.in_flight() >= MAX_EXCHANGES_FOR_ANSWERS);
        if busy {
            let metric = self.ups[u].metric;
            self.metrics.http_limit(metric, "era_server_requests", 1);
            if let Some(more) = self.ups[u]
                .http_mut()
                .and_then(|h| h.bridges.input_log.hit(now, 1))
            {
                crate::log_warn!(
                    "[{}] {MAX_EXCHANGES_FOR_ANSWERS} exchanges out to the upstream: a server \
                     request on a relay-owned session dropped unanswered ({more} more since \
                     the last line)",
                    self.ups[u].cfg.name
                );
            }
            return;
        }
        if method == "ping" {
            let pong = format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{{}}}}",
                sid.to_json()
            );
            self.http_bridge_post(u, key, pong.into_bytes(), None);
            return;
        }
        let carrier = match on {
            Some(up) => Some(up.clone()),
            None => self.http_bridge_only_call(u, key, true),
        };
        let call = carrier.as_ref().and_then(|up| {
            let c = self.ups[u].http()?.bridges.calls.get(up)?;
            c.carries_input.then(|| c.leg.as_ref().map(|(s, _)| *s))
        });
        let (Some(up), Some(leg)) = (carrier, call) else {
            self.dropped(u, Dropped::UnattributedRequest);
            let e = jsonrpc::error_response(
                Some(&sid),
                -32603,
                "mcp-relay: no single 2026-07-28 call of this session in flight to carry the \
                 request",
                Value::Null,
            );
            self.http_bridge_post(u, key, e, None);
            return;
        };
        // The first leg of a call is its stateless session; between rounds
        // the call has none, and the input bridge holds the request.
        let leg = leg.map_or_else(|| Id::Str("".into()), leg_id);
        let token = crate::mcp::session::new_session_id();
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        let b = &mut h.bridges;
        let limits = input::Limits::default();
        let bridge = b
            .inputs
            .entry(key.to_string())
            .or_insert_with(|| input::Bridge::new(limits));
        let asked = match token {
            Ok(t) => {
                bridge.on_server_request(&(), &up, &leg, sid.clone(), method, params, now, || t)
            }
            Err(e) => {
                crate::log_warn!(
                    "random request state unavailable ({e}); refusing the server's request"
                );
                Asked::Refused(Out {
                    to_client: Vec::new(),
                    to_server: vec![jsonrpc::error_response(
                        Some(&sid),
                        -32603,
                        "mcp-relay: no request state available",
                        Value::Null,
                    )],
                })
            }
        };
        match asked {
            Asked::Carried(out) => self.http_bridge_apply(u, key, out),
            Asked::Refused(out) => {
                let metric = self.ups[u].metric;
                self.metrics.http_limit(metric, "era_input_refused", 1);
                if let Some(more) = self.ups[u]
                    .http_mut()
                    .and_then(|h| h.bridges.input_log.hit(now, 1))
                {
                    crate::log_warn!(
                        "[{}] a server request to a 2026-07-28 client refused: too many calls or \
                         requests waiting for client input ({more} more since the last line)",
                        self.ups[u].cfg.name
                    );
                }
                self.http_bridge_apply(u, key, out);
            }
            Asked::NotInput => {
                let e = jsonrpc::error_response(
                    Some(&sid),
                    crate::mcp::era::METHOD_NOT_FOUND,
                    "mcp-relay: the 2026-07-28 client cannot be sent this request",
                    Value::Null,
                );
                self.http_bridge_post(u, key, e, None);
            }
        }
    }

    /// Carries out what the input bridge decided for bridge `key`: answers
    /// to the server go on its session, answers to legs to their clients
    /// (a leg answered `input_required` lets go of its call); calls the
    /// input bridge gave up are forgotten.
    pub(super) fn http_bridge_apply(&mut self, u: usize, key: &str, out: Out) {
        for line in out.to_server {
            self.http_bridge_post(u, key, line, None);
        }
        for (leg, line) in out.to_client {
            let Some(skey) = leg_skey(&leg) else { continue };
            let Some(h) = self.ups[u].http_mut() else {
                return;
            };
            let Some(up) = h.bridges.by_skey.remove(&skey) else {
                continue;
            };
            let client = h
                .bridges
                .calls
                .get_mut(&up)
                .and_then(|c| c.leg.take())
                .map(|(_, id)| id);
            let Some(client) = client else { continue };
            if is_input_required(&line) {
                // The call goes on at the server without this leg: ending
                // its session must not cancel the exchange.
                h.stateless.remove(&skey);
            } else {
                h.bridges.calls.remove(&up);
            }
            match with_id(&line, &client) {
                Some(line) => self.on_session_line(skey, &line),
                None => self.fail_request(
                    skey,
                    &client,
                    RelayError::InvalidReply,
                    "The server's reply is not a JSON object",
                    json!({}),
                ),
            }
        }
        self.http_bridge_sweep(u);
    }

    /// Calls without a leg the input bridge no longer holds (given up,
    /// finished): forgotten, their exchanges stopped.
    fn http_bridge_sweep(&mut self, u: usize) {
        let reg = self.poll.registry();
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        let b = &mut h.bridges;
        let gone: Vec<Id> = b
            .calls
            .iter()
            .filter(|(up, c)| c.leg.is_none() && !b.inputs.get(&c.key).is_some_and(|i| i.holds(up)))
            .map(|(up, _)| up.clone())
            .collect();
        for up in gone {
            if let Some(ex) = b.calls.remove(&up).and_then(|c| c.ex) {
                h.client.cancel(ex, reg);
                h.carries.remove(&ex);
            }
        }
    }

    /// The input bridges' wait for retries (`bridge_get.rs` polls it):
    /// calls whose client did not retry in time are given up.
    pub(super) fn http_bridge_input_tick(&mut self, u: usize) {
        let now = self.now;
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        let due: Vec<String> = h
            .bridges
            .inputs
            .iter()
            .filter(|(_, i)| i.next_deadline().is_some_and(|d| d <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let Some(i) = self.ups[u]
                .http_mut()
                .and_then(|h| h.bridges.inputs.get_mut(&key))
            else {
                continue;
            };
            let out = i.on_tick(now);
            crate::log_info!(
                "[{}] a call given up: the 2026-07-28 client did not retry with the server's \
                 input within {:?}",
                self.ups[u].cfg.name,
                input::Limits::default().timeout
            );
            self.http_bridge_apply(u, &key, out);
        }
    }

    /// A bridged POST failed (`status`, or below HTTP): the leg of the call
    /// it carried is answered with an error.
    pub(super) fn http_bridge_post_failed(
        &mut self,
        u: usize,
        up: &Id,
        kind: RelayError,
        why: &str,
        data: Value,
    ) {
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        let Some(call) = h.bridges.calls.remove(up) else {
            return;
        };
        let Some((skey, client)) = call.leg else {
            return;
        };
        h.bridges.by_skey.remove(&skey);
        self.fail_request(skey, &client, kind, why, data);
    }

    /// Stateless session `skey` ends: a bridged call whose leg it is, still
    /// out, is given up (`notifications/cancelled` to the server).
    pub(super) fn http_bridge_end(&mut self, skey: SKey) {
        if self.http_bridge_listen_end(skey) {
            return;
        }
        let u = up_of(skey);
        let reg = self.poll.registry();
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        let Some(up) = h.bridges.by_skey.remove(&skey) else {
            return;
        };
        let Some(call) = h.bridges.calls.remove(&up) else {
            return;
        };
        let key = call.key;
        if let Some(i) = h.bridges.inputs.get_mut(&key)
            && i.holds(&up)
        {
            let out = i.on_client_gone(&(), &leg_id(skey));
            if let Some(ex) = call.ex {
                h.client.cancel(ex, reg);
                h.carries.remove(&ex);
            }
            self.http_bridge_apply(u, &key, out);
            return;
        }
        let msg = jsonrpc::cancelled(&up, "mcp-relay: the client closed the request's stream");
        self.http_bridge_post(u, &key, msg, None);
    }
}
