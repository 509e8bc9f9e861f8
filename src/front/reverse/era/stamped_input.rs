//! Both pools: a handshake-era session stamped toward a modern process
//! (`stamped.rs`, `shared_pool.rs`) whose call the server answers with an
//! `InputRequiredResult` (`mcp::era::stamper_input`).
//!
//! The relay's requests to the client (`elicitation/create`,
//! `sampling/createMessage`, `roots/list`, ids `mcp-relay-input-N`) go on
//! the call's own POST, turned into an event stream (else the session's GET
//! stream); the client's answers come as POSTed responses on the session
//! and never reach the server; once all are in, the call is sent to the
//! process again (same id, stamped again, through the mux in the shared
//! pool) with `inputResponses` and `requestState`, its response timeout
//! restarted. The call stays in the session's table meanwhile, so its final
//! result (or an error) is its one answer; a round the client does not
//! answer within 60 s fails the call (timer `StampedInput`).

use super::*;
use crate::mcp::era::stamper_input::{Limits, Out, StamperInput};

pub(in crate::front::reverse) struct StampedInput {
    core: StamperInput,
    timer: Option<TimerId>,
}

impl Reverse {
    /// A request of stamped session `skey` goes to the server as `line`.
    pub(super) fn stamped_input_sent(&mut self, skey: SKey, id: &Id, method: &str, line: &[u8]) {
        if !crate::mcp::era::input::carries_input(method) {
            return;
        }
        let Some(s) = self.sessions.get_mut(&skey) else {
            return;
        };
        let si = s.stamp_input.get_or_insert_with(|| {
            let mut core = StamperInput::new(Limits::default());
            if let Some(ctx) = &s.stamp {
                core.declare(&ctx.capabilities);
            }
            Box::new(StampedInput { core, timer: None })
        });
        si.core.sent(id, method, line);
    }

    /// The process answered request `id` of session `skey`: true when the
    /// answer was an input round the relay carries (or refused).
    pub(in crate::front::reverse) fn stamped_input_result(
        &mut self,
        skey: SKey,
        id: &Id,
        msg: &[u8],
    ) -> bool {
        let now = self.now;
        let Some(si) = self
            .sessions
            .get_mut(&skey)
            .and_then(|s| s.stamp_input.as_mut())
        else {
            return false;
        };
        let Some(out) = si.core.on_result(id, msg, now) else {
            return false;
        };
        self.stamped_input_apply(skey, id, out);
        true
    }

    /// A response of the client on stamped session `skey`: true when it
    /// answered one of the relay's requests (it goes no further).
    pub(super) fn stamped_input_response(
        &mut self,
        skey: SKey,
        env: &Envelope,
        line: &[u8],
    ) -> bool {
        let Some(id) = env.id() else { return false };
        if !StamperInput::is_ask(&id) {
            return false;
        }
        let Some(si) = self
            .sessions
            .get_mut(&skey)
            .and_then(|s| s.stamp_input.as_mut())
        else {
            return true;
        };
        if let Some(out) = si.core.on_response(&id, line) {
            let call = out
                .retry
                .as_ref()
                .or(out.answer.as_ref())
                .map(|(c, _)| c.clone());
            if let Some(call) = call {
                self.stamped_input_apply(skey, &call, out);
            }
        }
        true
    }

    /// The client cancelled call `id`: the relay's requests for it still
    /// open are cancelled at the client.
    pub(in crate::front::reverse) fn stamped_input_cancel(&mut self, skey: SKey, id: &Id) {
        let Some(si) = self
            .sessions
            .get_mut(&skey)
            .and_then(|s| s.stamp_input.as_mut())
        else {
            return;
        };
        for line in si.core.cancel(id) {
            self.push_to_stream(skey, line);
        }
    }

    /// The round timer of session `skey` fired.
    pub(in crate::front::reverse) fn stamped_input_tick(&mut self, skey: SKey) {
        let now = self.now;
        let Some(si) = self
            .sessions
            .get_mut(&skey)
            .and_then(|s| s.stamp_input.as_mut())
        else {
            return;
        };
        si.timer = None;
        for out in si.core.expire(now) {
            if let Some((call, _)) = out.answer.clone() {
                self.stamped_input_apply(skey, &call, out);
            }
        }
        self.stamped_input_rearm(skey);
    }

    fn stamped_input_apply(&mut self, skey: SKey, call: &Id, out: Out) {
        let route = self
            .sessions
            .get(&skey)
            .and_then(|s| s.inflight.get(call))
            .map(|r| r.route);
        for line in out.to_client {
            let sent = match route {
                Some(ReplyTo::Client(tok)) => self.event_on_post(skey, tok, &line),
                _ => false,
            };
            if !sent {
                self.push_to_stream(skey, line);
            }
        }
        if let Some((id, line)) = out.retry {
            // Progress of the call: its response timeout starts over.
            self.arm_response_timer(skey, &id);
            if let Ok(Message::Single(env)) = jsonrpc::peek(&line) {
                self.send_up(skey, &line, &env, Some(&id));
            }
            if let Some(conn) = self.sessions.get(&skey).and_then(|s| s.binding.conn()) {
                self.proc_flush(conn);
            }
        }
        if let Some((id, line)) = out.answer {
            self.answer_bytes(skey, &id, line);
        }
        self.stamped_input_rearm(skey);
    }

    /// The round timer set to the core's next deadline; its counters
    /// folded into the upstream's (`mcp_relay_era_input_total`).
    fn stamped_input_rearm(&mut self, skey: SKey) {
        let now = self.now;
        let Some(si) = self
            .sessions
            .get_mut(&skey)
            .and_then(|s| s.stamp_input.as_mut())
        else {
            return;
        };
        let stats = std::mem::take(&mut si.core.stats);
        let old = si.timer.take();
        let next = si.core.next_deadline();
        if let Some(t) = old {
            self.timers.cancel(t);
        }
        let t = next.map(|at| {
            self.timers
                .insert(at.max(now), TimerKind::StampedInput(skey))
        });
        if let Some(si) = self
            .sessions
            .get_mut(&skey)
            .and_then(|s| s.stamp_input.as_mut())
        {
            si.timer = t;
        }
        let c = &mut self.ups[up_of(skey)].era;
        c.input_rounds += stats.rounds;
        c.input_refused += stats.refused;
        c.input_expired += stats.expired;
    }
}
