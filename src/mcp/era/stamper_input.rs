//! A modern server's `InputRequiredResult` carried to a handshake-era
//! client (the other direction of `input.rs`): every mode where the relay
//! stamps a handshake-era client's requests toward a modern server
//! (`stamper.rs` over HTTP, the reverse pools' stamped sessions).
//!
//! A handshake-era client knows no `InputRequiredResult`; it is sent the
//! server→client requests of its own era instead. When the server answers
//! a call (`tools/call`, `prompts/get`, `resources/read`) with
//!
//! ```text
//! {"resultType":"input_required","requestState":S,
//!  "inputRequests":{"k1":{"method":"elicitation/create","params":{…}}, …}}
//! ```
//!
//! the relay sends the client one request per entry (ids
//! `mcp-relay-input-N`), gathers its answers and, once all are in, retries
//! the call toward the server (the request as first sent, same id, with
//! `params.inputResponses` = the answers by key and `params.requestState` =
//! `S`). The server's next answer is a final result (it goes to the client
//! as the answer to its call) or another round. The client sees one call.
//!
//! ```text
//!  sent ── input_required ──▶ Asking (answers gathered) ── all in ──▶ sent (retried)
//!                                 │ client error, timeout, cancel
//!                                 ▼
//!                               gone (the call answered with an error, or not at all on cancel)
//! ```
//!
//! Only methods the client declared in its `initialize` are asked
//! (`elicitation`, `sampling`, `roots`): otherwise the call is answered
//! -32021. Bounded by [`Limits`]: calls remembered for a retry (the carrying
//! requests in flight at the server), input requests per round, rounds per
//! call, and how long the relay waits for the client's answers (on a clock
//! passed in). Past a bound the call is answered with an error.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::input::carries_input;
use crate::proto::jsonrpc::{self, Id};

/// JSON-RPC internal error: the relay could not carry the server's request.
const INTERNAL_ERROR: i64 = -32603;

/// Prefix of the ids of the relay's requests to the client.
pub const ASK_ID_PREFIX: &str = "mcp-relay-input-";

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Carrying requests remembered per client (in flight at the server,
    /// or waiting for the client's answers); past it a call is not
    /// remembered and an `input_required` for it is answered with an error.
    pub max_calls: usize,
    /// Input requests in one round.
    pub max_inputs: usize,
    /// Rounds of one call.
    pub max_rounds: u32,
    /// How long the relay waits for the client's answers to one round.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_calls: 256,
            max_inputs: 16,
            max_rounds: 32,
            timeout: Duration::from_secs(60),
        }
    }
}

/// Counters the fronts export (`mcp_relay_era_input_total{what}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Rounds carried to the client.
    pub rounds: u64,
    /// Calls answered with an error instead (capability not declared,
    /// over a bound, malformed, the client's error).
    pub refused: u64,
    /// Rounds the client did not answer in time.
    pub expired: u64,
}

/// What the front carries out, in this order.
#[derive(Debug, Default, PartialEq)]
pub struct Out {
    /// Requests, and `notifications/cancelled`, to the client.
    pub to_client: Vec<Vec<u8>>,
    /// The call retried toward the server: (its id, the request line).
    pub retry: Option<(Id, Vec<u8>)>,
    /// The call answered by the relay (an error): (its id, the line).
    pub answer: Option<(Id, Vec<u8>)>,
}

struct Call {
    /// The request as sent to the server (stamped).
    request: Value,
    rounds: u32,
    asking: Option<Asking>,
}

struct Asking {
    /// key → (the relay's request id, the client's result once in).
    answers: Vec<(String, Id, Option<Value>)>,
    state: Option<Value>,
    deadline: Instant,
}

/// Per handshake-era client (a `forward --url` host, one reverse session).
pub struct StamperInput {
    /// Capabilities of the client's `initialize`.
    declared: Value,
    calls: HashMap<Id, Call>,
    /// The relay's request id → the call it asks for.
    asks: HashMap<Id, Id>,
    next: u64,
    limits: Limits,
    pub stats: Stats,
}

impl StamperInput {
    pub fn new(limits: Limits) -> StamperInput {
        StamperInput {
            declared: json!({}),
            calls: HashMap::new(),
            asks: HashMap::new(),
            next: 0,
            limits,
            stats: Stats::default(),
        }
    }

    /// The capabilities the client declared in its `initialize`.
    pub fn declare(&mut self, capabilities: &Value) {
        self.declared = capabilities.clone();
    }

    /// Whether `id` names one of the relay's requests to the client.
    pub fn is_ask(id: &Id) -> bool {
        matches!(id, Id::Str(s) if s.starts_with(ASK_ID_PREFIX))
    }

    /// A request of the client went to the server as `line` (stamped):
    /// remembered when its result may be `input_required`. At the cap the
    /// calls not waiting for the client are let go first (among them those
    /// the relay answered itself, a timeout, which never come back here).
    pub fn sent(&mut self, id: &Id, method: &str, line: &[u8]) {
        if !carries_input(method) {
            return;
        }
        if self.calls.len() >= self.limits.max_calls && !self.calls.contains_key(id) {
            self.calls.retain(|_, c| c.asking.is_some());
        }
        if self.calls.len() >= self.limits.max_calls && !self.calls.contains_key(id) {
            return;
        }
        let Ok(request) = serde_json::from_slice::<Value>(line) else {
            return;
        };
        let rounds = self.calls.get(id).map_or(0, |c| c.rounds);
        self.calls.insert(
            id.clone(),
            Call {
                request,
                rounds,
                asking: None,
            },
        );
    }

    /// The server answered request `id` with `line`: `None` passes it to
    /// the client as it is (the call, if remembered, is forgotten).
    pub fn on_result(&mut self, id: &Id, line: &[u8], now: Instant) -> Option<Out> {
        let input_required = memchr::memmem::find(line, b"input_required").is_some();
        if !input_required {
            self.calls.remove(id);
            return None;
        }
        let v: Value = serde_json::from_slice(line).ok()?;
        let result = v.get("result")?;
        if result.get("resultType").and_then(Value::as_str) != Some("input_required") {
            self.calls.remove(id);
            return None;
        }
        let Some(call) = self.calls.get_mut(id) else {
            self.stats.refused += 1;
            return Some(refusal(
                id,
                INTERNAL_ERROR,
                "The server asked for input the relay cannot carry: too many calls in flight",
            ));
        };
        call.rounds += 1;
        if call.rounds > self.limits.max_rounds {
            self.calls.remove(id);
            self.stats.refused += 1;
            return Some(refusal(
                id,
                INTERNAL_ERROR,
                "The server asked for input in too many rounds",
            ));
        }
        let requests: Vec<(String, Value)> = match result.get("inputRequests") {
            Some(Value::Object(m)) => m.iter().map(|(k, r)| (k.clone(), r.clone())).collect(),
            _ => Vec::new(),
        };
        let state = result.get("requestState").cloned();
        if requests.len() > self.limits.max_inputs {
            self.calls.remove(id);
            self.stats.refused += 1;
            return Some(refusal(
                id,
                INTERNAL_ERROR,
                "The server asked for too many inputs at once",
            ));
        }
        let mut asked = Vec::new();
        let mut to_client = Vec::new();
        for (key, r) in requests {
            let method = r.get("method").and_then(Value::as_str).unwrap_or_default();
            let Some(cap) = capability_of(method) else {
                self.calls.remove(id);
                self.stats.refused += 1;
                return Some(refusal(
                    id,
                    INTERNAL_ERROR,
                    &format!("The server asked for input the relay cannot carry: {method:?}"),
                ));
            };
            if self.declared.get(cap).is_none_or(Value::is_null) {
                self.calls.remove(id);
                self.stats.refused += 1;
                return Some(refusal(
                    id,
                    super::MISSING_CLIENT_CAPABILITY,
                    &format!(
                        "The server asked for {method}, and the client did not declare the \
                         {cap} capability in its initialize"
                    ),
                ));
            }
            self.next += 1;
            let ask_text = format!("{ASK_ID_PREFIX}{}", self.next);
            let mut req = Map::new();
            req.insert("jsonrpc".into(), Value::from("2.0"));
            req.insert("id".into(), Value::from(ask_text.as_str()));
            let ask = Id::Str(ask_text.into());
            req.insert("method".into(), Value::from(method));
            if let Some(p) = r.get("params") {
                req.insert("params".into(), p.clone());
            }
            to_client.push(Value::Object(req).to_string().into_bytes());
            asked.push((key, ask, None));
        }
        self.stats.rounds += 1;
        let call = self.calls.get_mut(id)?;
        if asked.is_empty() {
            // Nothing to ask: retry at once with the state alone.
            let retry = retry_line(&call.request, &[], state.as_ref());
            return Some(Out {
                retry: Some((id.clone(), retry)),
                ..Out::default()
            });
        }
        for (_, ask, _) in &asked {
            self.asks.insert(ask.clone(), id.clone());
        }
        call.asking = Some(Asking {
            answers: asked,
            state,
            deadline: now + self.limits.timeout,
        });
        Some(Out {
            to_client,
            ..Out::default()
        })
    }

    /// A response of the client (`id`, `line`): `None` when it answers no
    /// request of the relay's.
    pub fn on_response(&mut self, id: &Id, line: &[u8]) -> Option<Out> {
        let call_id = self.asks.remove(id)?;
        let v: Value = serde_json::from_slice(line).unwrap_or(Value::Null);
        let Some(call) = self.calls.get_mut(&call_id) else {
            return Some(Out::default());
        };
        let Some(asking) = call.asking.as_mut() else {
            return Some(Out::default());
        };
        let Some(result) = v.get("result") else {
            // This request is answered: only the others are cancelled.
            if let Some(slot) = asking.answers.iter_mut().find(|(_, a, _)| a == id) {
                slot.2 = Some(Value::Null);
            }
            let message = v
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("no result");
            let text = format!("The client answered the server's request with an error: {message}");
            self.stats.refused += 1;
            return Some(self.give_up(&call_id, INTERNAL_ERROR, &text));
        };
        if let Some(slot) = asking.answers.iter_mut().find(|(_, a, _)| a == id) {
            slot.2 = Some(result.clone());
        }
        if asking.answers.iter().any(|(_, _, r)| r.is_none()) {
            return Some(Out::default());
        }
        let asking = call.asking.take()?;
        let answers: Vec<(String, Value)> = asking
            .answers
            .into_iter()
            .filter_map(|(k, _, r)| r.map(|r| (k, r)))
            .collect();
        let retry = retry_line(&call.request, &answers, asking.state.as_ref());
        Some(Out {
            retry: Some((call_id, retry)),
            ..Out::default()
        })
    }

    /// The client cancelled its call `id`, or it ended otherwise: forgotten,
    /// the relay's requests for it still open cancelled at the client.
    pub fn cancel(&mut self, id: &Id) -> Vec<Vec<u8>> {
        let Some(call) = self.calls.remove(id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (_, ask, answer) in call.asking.map(|a| a.answers).unwrap_or_default() {
            self.asks.remove(&ask);
            if answer.is_none() {
                out.push(jsonrpc::cancelled(&ask, "mcp-relay: the call ended"));
            }
        }
        out
    }

    /// Rounds the client did not answer by `now`: each call answered with
    /// an error, its open requests cancelled at the client.
    pub fn expire(&mut self, now: Instant) -> Vec<Out> {
        let due: Vec<Id> = self
            .calls
            .iter()
            .filter(|(_, c)| c.asking.as_ref().is_some_and(|a| a.deadline <= now))
            .map(|(id, _)| id.clone())
            .collect();
        due.into_iter()
            .map(|id| {
                self.stats.expired += 1;
                self.give_up(
                    &id,
                    INTERNAL_ERROR,
                    "The client did not answer the server's request in time",
                )
            })
            .collect()
    }

    /// The earliest round deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.calls
            .values()
            .filter_map(|c| c.asking.as_ref().map(|a| a.deadline))
            .min()
    }

    /// Calls waiting for the client's answers.
    pub fn asking(&self) -> usize {
        self.calls.values().filter(|c| c.asking.is_some()).count()
    }

    fn give_up(&mut self, id: &Id, code: i64, message: &str) -> Out {
        let to_client = self.cancel(id);
        Out {
            to_client,
            retry: None,
            answer: Some((id.clone(), error_line(id, code, message))),
        }
    }
}

/// The client capability an input request needs.
fn capability_of(method: &str) -> Option<&'static str> {
    match method {
        "elicitation/create" => Some("elicitation"),
        "sampling/createMessage" => Some("sampling"),
        "roots/list" => Some("roots"),
        _ => None,
    }
}

fn retry_line(request: &Value, answers: &[(String, Value)], state: Option<&Value>) -> Vec<u8> {
    let mut req = request.clone();
    if let Some(obj) = req.as_object_mut() {
        let params = obj
            .entry("params")
            .or_insert_with(|| Value::Object(Map::new()));
        if !params.is_object() {
            *params = Value::Object(Map::new());
        }
        if let Some(p) = params.as_object_mut() {
            p.remove("inputResponses");
            p.remove("requestState");
            if !answers.is_empty() {
                let m: Map<String, Value> = answers.iter().cloned().collect();
                p.insert("inputResponses".into(), Value::Object(m));
            }
            if let Some(s) = state {
                p.insert("requestState".into(), s.clone());
            }
        }
    }
    req.to_string().into_bytes()
}

fn error_line(id: &Id, code: i64, message: &str) -> Vec<u8> {
    jsonrpc::error_response(
        Some(id),
        code,
        message,
        crate::proto::object::object([("kind", serde_json::Value::from("era"))]),
    )
}

fn refusal(id: &Id, code: i64, message: &str) -> Out {
    Out {
        answer: Some((id.clone(), error_line(id, code, message))),
        ..Out::default()
    }
}

#[cfg(test)]
#[path = "stamper_input_tests.rs"]
mod tests;
