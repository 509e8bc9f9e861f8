//! A handshake-era server's requests to its client (sampling, elicitation,
//! roots), carried to a modern client as `InputRequiredResult` rounds.
//!
//! A modern client cannot be sent requests. When the server asks something
//! while the client's `tools/call` (or `prompts/get`, `resources/read`) is in
//! flight, the relay answers that call — this leg of it — with
//!
//! ```text
//! {"resultType":"input_required","requestState":TOKEN,
//!  "inputRequests":{"r1":{"method":"elicitation/create","params":{…}}}}
//! ```
//!
//! and keeps the call open at the server. The client retries the call (a new
//! id) with `inputResponses: {"r1": {…}}` and the same `requestState`; the
//! relay answers the server's request with each response and the retry
//! becomes the leg the call's result (or the next round) is delivered to.
//! What the server asks while no leg is open waits for the next retry. An
//! entry belongs to one owner (a session): a token presented by another is
//! unknown, so nothing crosses sessions.
//!
//! Bounded by [`Limits`]: entries per bridge, requests per entry, rounds per
//! call, and how long the relay waits for the client's retry. Past a bound
//! the server's request is answered with an error by the relay, or the call
//! is given up (its requests answered with errors, the call cancelled at the
//! server, its open leg answered with an error).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::proto::jsonrpc::{self, Id};

/// Server requests that become input requests.
pub fn is_input_method(method: &str) -> bool {
    matches!(
        method,
        "sampling/createMessage" | "elicitation/create" | "roots/list"
    )
}

/// Client requests whose result may be `input_required`.
pub fn carries_input(method: &str) -> bool {
    matches!(method, "tools/call" | "prompts/get" | "resources/read")
}

/// Over stdio a server's request names no call; the relay takes the owner's
/// most recently started call that may carry input (over HTTP the request
/// comes on that call's own response stream and needs no guess). `None`:
/// no such call in flight, and the relay answers the server with an error.
pub fn carrier<'a, T: Ord + Copy + 'a>(
    inflight: impl IntoIterator<Item = (&'a Id, &'a str, T)>,
) -> Option<&'a Id> {
    inflight
        .into_iter()
        .filter(|(_, m, _)| carries_input(m))
        .max_by_key(|(_, _, started)| *started)
        .map(|(id, _, _)| id)
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Calls with input outstanding at once (per bridge: per session).
    pub max_entries: usize,
    /// Server requests waiting in one call.
    pub max_inputs: usize,
    /// Rounds (retries) of one call.
    pub max_rounds: u32,
    /// How long the relay waits for the client's retry.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_entries: 64,
            max_inputs: 16,
            max_rounds: 32,
            timeout: Duration::from_secs(60),
        }
    }
}

/// Counters the front exports as metrics (`era_input_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub rounds: u64,
    pub refused: u64,
    pub expired: u64,
    pub abandoned: u64,
}

/// What the front does after a bridge call: messages to write each way,
/// in order.
#[derive(Debug, Default, PartialEq)]
pub struct Out {
    /// To the client: (the leg's id, the whole response line).
    pub to_client: Vec<(Id, Vec<u8>)>,
    /// To the server: responses to its requests, `notifications/cancelled`.
    pub to_server: Vec<Vec<u8>>,
}

struct Entry<K> {
    owner: K,
    /// The call's id at the server (still in flight there).
    upstream: Id,
    /// The client leg the next answer goes to, if one is open.
    leg: Option<Id>,
    /// Asked by the server, not yet sent to the client: (key, server id, request).
    pending: Vec<(String, Id, Value)>,
    /// Sent to the client, not yet answered: key → server id.
    asked: Vec<(String, Id)>,
    /// The call's result, come while no leg was open.
    result: Option<Vec<u8>>,
    next_key: u32,
    rounds: u32,
    deadline: Instant,
}

pub struct Bridge<K> {
    limits: Limits,
    entries: HashMap<String, Entry<K>>,
    /// Call id at the server → its entry's token.
    by_upstream: HashMap<Id, String>,
    pub stats: Stats,
}

/// What became of the server's request.
#[derive(Debug, PartialEq)]
pub enum Asked {
    /// Sent or queued (see `Out`).
    Carried(Out),
    /// Not an input method: the caller handles it.
    NotInput,
    /// Over a limit: answered with an error by the relay (in `Out`).
    Refused(Out),
}

/// What became of the client's retry.
#[derive(Debug, PartialEq)]
pub enum Retried {
    Carried(Out),
    /// No such `requestState` for this owner: answer the retry -32602.
    Unknown,
}

impl<K: PartialEq + Clone> Bridge<K> {
    pub fn new(limits: Limits) -> Bridge<K> {
        Bridge {
            limits,
            entries: HashMap::new(),
            by_upstream: HashMap::new(),
            stats: Stats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the call `upstream` (its id at the server) is held here.
    pub fn holds(&self, upstream: &Id) -> bool {
        self.by_upstream.contains_key(upstream)
    }

    /// The call (its id at the server) whose open leg is `leg`.
    pub fn upstream_of(&self, leg: &Id) -> Option<&Id> {
        self.entries
            .values()
            .find(|e| e.leg.as_ref() == Some(leg))
            .map(|e| &e.upstream)
    }

    /// The nearest deadline, for the front's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| e.leg.is_none())
            .map(|e| e.deadline)
            .min()
    }

    /// The server asked `method` (id `server_id`) while the owner's call
    /// `upstream` (leg `leg`: the client's id for it) is in flight. `mint`
    /// makes a fresh unguessable token for a new entry.
    #[allow(clippy::too_many_arguments)]
    pub fn on_server_request(
        &mut self,
        owner: &K,
        upstream: &Id,
        leg: &Id,
        server_id: Id,
        method: &str,
        params: Option<&Value>,
        now: Instant,
        mint: impl FnOnce() -> String,
    ) -> Asked {
        if !is_input_method(method) {
            return Asked::NotInput;
        }
        let token = match self.by_upstream.get(upstream) {
            Some(t) => t.clone(),
            None => {
                if self.entries.len() >= self.limits.max_entries {
                    return self.refuse(&server_id, "too many calls waiting for client input");
                }
                let t = mint();
                if self.entries.contains_key(&t) {
                    // Never overwrite another call's entry.
                    return self.refuse(&server_id, "request state collision");
                }
                self.entries.insert(
                    t.clone(),
                    Entry {
                        owner: owner.clone(),
                        upstream: upstream.clone(),
                        leg: Some(leg.clone()),
                        pending: Vec::new(),
                        asked: Vec::new(),
                        result: None,
                        next_key: 0,
                        rounds: 0,
                        deadline: now + self.limits.timeout,
                    },
                );
                self.by_upstream.insert(upstream.clone(), t.clone());
                t
            }
        };
        let max_inputs = self.limits.max_inputs;
        let Some(e) = self.entries.get_mut(&token) else {
            return Asked::NotInput;
        };
        if e.owner != *owner {
            return self.refuse(&server_id, "the call belongs to another session");
        }
        if e.pending.len() + e.asked.len() >= max_inputs {
            return self.refuse(
                &server_id,
                "too many requests waiting for client input in one call",
            );
        }
        e.next_key += 1;
        let key = format!("r{}", e.next_key);
        let mut req = Map::new();
        req.insert("method".into(), Value::from(method));
        if let Some(p) = params {
            req.insert("params".into(), p.clone());
        }
        e.pending.push((key, server_id, Value::Object(req)));
        let mut out = Out::default();
        self.flush(&token, now, &mut out);
        Asked::Carried(out)
    }

    /// The owner's retry `leg` of a call: its `params` carry
    /// `requestState` and `inputResponses`.
    pub fn on_client_retry(
        &mut self,
        owner: &K,
        leg: &Id,
        params: &Value,
        now: Instant,
    ) -> Retried {
        let Some(token) = params.get("requestState").and_then(Value::as_str) else {
            return Retried::Unknown;
        };
        let token = token.to_string();
        let Some(e) = self.entries.get_mut(&token) else {
            return Retried::Unknown;
        };
        if e.owner != *owner || e.leg.is_some() {
            // Another session's token, or a retry while a leg is open.
            return Retried::Unknown;
        }
        let mut out = Out::default();
        let responses = params.get("inputResponses").and_then(Value::as_object);
        e.asked
            .retain(|(key, sid)| match responses.and_then(|r| r.get(key)) {
                Some(result) => {
                    let line = crate::proto::object::object([
                        ("jsonrpc", serde_json::Value::from("2.0")),
                        ("id", id_value(sid)),
                        ("result", result.clone()),
                    ]);
                    out.to_server.push(line.to_string().into_bytes());
                    false
                }
                None => true,
            });
        e.leg = Some(leg.clone());
        e.rounds += 1;
        self.stats.rounds += 1;
        if e.rounds > self.limits.max_rounds {
            self.give_up(&token, "too many input rounds", &mut out);
            return Retried::Carried(out);
        }
        if let Some(result) = e.result.take() {
            // The call finished while the client was answering.
            let line = splice_result(leg, &result);
            out.to_client.push((leg.clone(), line));
            self.remove(&token);
            return Retried::Carried(out);
        }
        self.flush(&token, now, &mut out);
        Retried::Carried(out)
    }

    /// The server answered the call `upstream` with `response` (the whole
    /// line). `None`: not a bridged call, the caller delivers it as usual.
    /// `Some(out)`: the answer goes to the open leg, or waits for the retry.
    pub fn on_server_response(&mut self, upstream: &Id, response: &[u8]) -> Option<Out> {
        let token = self.by_upstream.get(upstream)?.clone();
        let e = self.entries.get_mut(&token)?;
        let mut out = Out::default();
        // The server's requests still waiting are moot now.
        let sids = e.asked.drain(..).map(|(_, s)| s);
        let sids: Vec<Id> = sids.chain(e.pending.drain(..).map(|(_, s, _)| s)).collect();
        for sid in sids {
            out.to_server
                .push(error_line(&sid, "the call they belong to has finished"));
        }
        match e.leg.take() {
            Some(leg) => {
                out.to_client
                    .push((leg.clone(), splice_result(&leg, response)));
                self.remove(&token);
            }
            None => e.result = Some(response.to_vec()),
        }
        Some(out)
    }

    /// The owner's open leg `leg` was cancelled or its stream closed: the
    /// call is given up at the server.
    pub fn on_client_gone(&mut self, owner: &K, leg: &Id) -> Out {
        let mut out = Out::default();
        let token = self
            .entries
            .iter()
            .find(|(_, e)| e.owner == *owner && e.leg.as_ref() == Some(leg))
            .map(|(t, _)| t.clone());
        if let Some(t) = token {
            if let Some(e) = self.entries.get_mut(&t) {
                e.leg = None; // nothing to answer on a leg that is gone
            }
            self.stats.abandoned += 1;
            self.give_up(&t, "the client went away", &mut out);
        }
        out
    }

    /// The owner (session) ended: every call of it is given up.
    pub fn drop_owner(&mut self, owner: &K) -> Out {
        let mut out = Out::default();
        let tokens: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.owner == *owner)
            .map(|(t, _)| t.clone())
            .collect();
        for t in tokens {
            if let Some(e) = self.entries.get_mut(&t) {
                e.leg = None;
            }
            self.give_up(&t, "the session ended", &mut out);
        }
        out
    }

    /// The timer: calls whose client did not retry in time are given up.
    pub fn on_tick(&mut self, now: Instant) -> Out {
        let mut out = Out::default();
        let due: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.leg.is_none() && now >= e.deadline)
            .map(|(t, _)| t.clone())
            .collect();
        for t in due {
            self.stats.expired += 1;
            self.give_up(&t, "the client did not provide the input in time", &mut out);
        }
        out
    }

    /// Sends what is pending on the open leg as one `input_required` round.
    fn flush(&mut self, token: &str, now: Instant, out: &mut Out) {
        let timeout = self.limits.timeout;
        let Some(e) = self.entries.get_mut(token) else {
            return;
        };
        if e.pending.is_empty() {
            return;
        }
        let Some(leg) = e.leg.take() else { return };
        let mut requests = Map::new();
        for (key, sid, req) in e.pending.drain(..) {
            requests.insert(key.clone(), req);
            e.asked.push((key, sid));
        }
        let result = crate::proto::object::object([
            ("resultType", Value::from("input_required")),
            ("inputRequests", Value::from(requests)),
            ("requestState", Value::from(token)),
        ]);
        let line = crate::proto::object::object([
            ("jsonrpc", serde_json::Value::from("2.0")),
            ("id", id_value(&leg)),
            ("result", result),
        ]);
        out.to_client.push((leg, line.to_string().into_bytes()));
        e.deadline = now + timeout;
    }

    fn give_up(&mut self, token: &str, why: &str, out: &mut Out) {
        let Some(e) = self.remove(token) else { return };
        let sids = e.asked.iter().map(|(_, s)| s);
        for sid in sids.chain(e.pending.iter().map(|(_, s, _)| s)) {
            out.to_server.push(error_line(sid, why));
        }
        out.to_server.push(jsonrpc::cancelled(&e.upstream, why));
        if let Some(leg) = e.leg {
            let line = jsonrpc::error_response(Some(&leg), -32603, why, Value::Null);
            out.to_client.push((leg, line));
        }
    }

    fn refuse(&mut self, server_id: &Id, why: &str) -> Asked {
        self.stats.refused += 1;
        Asked::Refused(Out {
            to_client: Vec::new(),
            to_server: vec![error_line(server_id, why)],
        })
    }

    fn remove(&mut self, token: &str) -> Option<Entry<K>> {
        let e = self.entries.remove(token)?;
        self.by_upstream.remove(&e.upstream);
        Some(e)
    }
}

/// The server's call result re-addressed to `leg` (its `result` or `error`
/// kept; a result marked complete). A response that does not parse becomes
/// an error for the leg.
fn splice_result(leg: &Id, response: &[u8]) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<Value>(response) else {
        return jsonrpc::error_response(
            Some(leg),
            -32603,
            "invalid reply from the server",
            Value::Null,
        );
    };
    let Some(o) = v.as_object_mut() else {
        return jsonrpc::error_response(
            Some(leg),
            -32603,
            "invalid reply from the server",
            Value::Null,
        );
    };
    o.insert("id".into(), id_value(leg));
    if let Some(r) = o.get_mut("result") {
        super::stamp::modernize(r);
    }
    v.to_string().into_bytes()
}

fn error_line(server_id: &Id, why: &str) -> Vec<u8> {
    jsonrpc::error_response(Some(server_id), -32603, why, Value::Null)
}

fn id_value(id: &Id) -> Value {
    serde_json::from_str(&id.to_json()).unwrap_or(Value::Null)
}

#[cfg(test)]
#[path = "input_tests.rs"]
mod tests;
