//! The input bridge on a bridged link (`forward -- CMD`, a 2026-07-28 client,
//! a handshake-era server): the server's requests to the client become
//! `InputRequiredResult` rounds (`era/input.rs`), and the client's retries,
//! cancellations and the call's result find their way back.
//!
//! Over stdio a server request names no call: its carrier is the most
//! recently started `tools/call`, `prompts/get` or `resources/read` of the
//! client still in flight (`input::carrier`). The link remembers those calls
//! while they are in flight (at most [`MAX_CALLS`]); the front forgets one
//! when it stops tracking it (`forget`).

use std::time::Instant;

use serde_json::Value;

use super::{Consumed, FromClient, Link, LinkState, MAX_CALLS};
use crate::mcp::era::input::{self, Asked, Out, Retried};
use crate::proto::jsonrpc::{self, Id};

impl Link {
    /// A request from the server. `Some`: the link carried it (or refused
    /// it with an error to the server); `None`: the front passes it to the
    /// client as before (not bridged, or not an input request).
    pub fn on_server_request(
        &mut self,
        server_id: Id,
        method: &str,
        params: Option<&Value>,
        now: Instant,
        mint: impl FnOnce() -> String,
    ) -> Option<Consumed> {
        if !matches!(self.state, LinkState::Bridged { .. }) || !input::is_input_method(method) {
            return None;
        }
        let inflight = self.calls.iter().map(|(id, seq)| (id, "tools/call", *seq));
        let Some(call) = input::carrier(inflight).cloned() else {
            let line = jsonrpc::error_response(
                Some(&server_id),
                -32603,
                "the 2026-07-28 client has no call in flight to carry this request",
                Value::Null,
            );
            return Some(Consumed {
                to_server: vec![line],
                ..Consumed::default()
            });
        };
        // The first leg of a call is the call itself: the client's id.
        let leg = call.clone();
        let asked =
            self.input
                .on_server_request(&(), &call, &leg, server_id, method, params, now, mint);
        match asked {
            Asked::Carried(out) | Asked::Refused(out) => Some(self.consumed(out)),
            Asked::NotInput => None,
        }
    }

    /// The front stopped tracking request `id` (answered, timed out,
    /// cancelled).
    pub fn forget(&mut self, id: &Id) {
        if self.input.holds(id) {
            // Its first leg was answered `input_required`; the call goes on
            // at the server and still carries its requests.
            self.kept.insert(id.clone());
        } else {
            self.calls.remove(id);
            self.logs.remove(id);
        }
    }

    /// The client's leg `id` went away (cancelled or timed out): the call
    /// it belongs to is given up at the server. `None`: not a leg.
    pub fn on_leg_gone(&mut self, id: &Id) -> Option<Consumed> {
        let out = self.input.on_client_gone(&(), id);
        (out != Out::default()).then(|| self.consumed(out))
    }

    /// When the input bridge next gives up on a client (for the timer).
    pub fn input_deadline(&self) -> Option<Instant> {
        self.input.next_deadline()
    }

    /// The timer: calls whose client did not retry in time are given up.
    pub fn on_input_tick(&mut self, now: Instant) -> Consumed {
        let out = self.input.on_tick(now);
        self.consumed(out)
    }

    /// Counters of the input bridge (for logs).
    pub fn input_stats(&self) -> input::Stats {
        self.input.stats
    }

    /// A bridged client message the input bridge takes: a retry carrying
    /// `requestState`, or the cancellation of a leg.
    pub(super) fn bridge_client(
        &mut self,
        method: Option<&str>,
        params: Option<&str>,
        id: Option<&Id>,
        now: Instant,
    ) -> Option<FromClient> {
        let method = method?;
        match id {
            Some(id) if input::carries_input(method) => {
                let retry = params
                    .filter(|p| memchr::memmem::find(p.as_bytes(), b"requestState").is_some())
                    .and_then(|p| serde_json::from_str::<Value>(p).ok())
                    .filter(|p| p.get("requestState").is_some());
                let Some(p) = retry else {
                    if self.calls.len() < MAX_CALLS {
                        self.call_seq += 1;
                        self.calls.insert(id.clone(), self.call_seq);
                    }
                    return None;
                };
                Some(match self.input.on_client_retry(&(), id, &p, now) {
                    Retried::Carried(out) => FromClient::Bridge(self.consumed(out)),
                    Retried::Unknown => FromClient::Refuse(jsonrpc::error_response(
                        Some(id),
                        super::super::INVALID_PARAMS,
                        "unknown or expired requestState",
                        Value::Null,
                    )),
                })
            }
            None if method == "notifications/cancelled" => {
                let p: Value = serde_json::from_str(params?).ok()?;
                let leg = Id::from_value(p.get("requestId")?);
                if let Some(c) = self.listen_cancelled(&leg) {
                    // A listen the relay holds: the server never saw it.
                    return Some(FromClient::Bridge(c));
                }
                self.calls.remove(&leg);
                let out = self.input.on_client_gone(&(), &leg);
                (out != Out::default()).then(|| FromClient::Bridge(self.consumed(out)))
            }
            _ => None,
        }
    }

    /// A server response on a bridged link: the result of a call the bridge
    /// holds goes to its current leg (or waits for the retry).
    pub(super) fn bridge_response(&mut self, id: &Id, line: &[u8]) -> Option<Consumed> {
        if self.is_own_listen_reply(id) {
            return Some(Consumed::default());
        }
        let out = self.input.on_server_response(id, line)?;
        Some(self.consumed(out))
    }

    /// The bridge's output for the front; calls it let go of (finished or
    /// given up) stop being carriers.
    fn consumed(&mut self, out: Out) -> Consumed {
        let input = &self.input;
        let gone: Vec<Id> = self
            .kept
            .iter()
            .filter(|id| !input.holds(id))
            .cloned()
            .collect();
        for id in gone {
            self.kept.remove(&id);
            self.calls.remove(&id);
            self.logs.remove(&id);
        }
        Consumed {
            to_server: out.to_server,
            to_client: out.to_client,
            ..Consumed::default()
        }
    }
}
