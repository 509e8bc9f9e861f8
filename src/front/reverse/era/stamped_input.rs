//! A handshake-era session stamped toward a modern server (both pools:
//! `stamped.rs`, `shared_pool.rs`; `reverse --url`: the session's
//! `mcp::era::stamper`) whose call the server answers with an
//! `InputRequiredResult` (`mcp::era::stamper_input`, kept here for a
//! process, by the stamper over HTTP).
//!
//! The relay's requests to the client (`elicitation/create`,
//! `sampling/createMessage`, `roots/list`, ids `mcp-relay-input-N`) go on
//! the call's own POST, turned into an event stream (else the session's GET
//! stream); the client's answers come as POSTed responses on the session
//! and never reach the server; once all are in, the call is sent to the
//! process again (same id, stamped again, through the mux in the shared
//! pool; POSTed again with the modern headers over HTTP) with
//! `inputResponses` and `requestState`, its response timeout restarted. The call stays in the session's table meanwhile, so its final
//! result (or an error) is its one answer; a round the client does not
//! answer within 60 s fails the call (timer `StampedInput`).

use super::*;
use crate::mcp::era::stamper_input::{Limits, Out, StamperInput};

pub(in crate::front::reverse) struct StampedInput {
    /// `None` over HTTP: the session's stamper keeps it.
    core: Option<StamperInput>,
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
            Box::new(StampedInput {
                core: Some(core),
                timer: None,
            })
        });
        if let Some(core) = si.core.as_mut() {
            core.sent(id, method, line);
        }
    }

    /// The process answered request `id` of session `skey`: true when the
    /// answer was an input round the relay carries (or refused).
    pub(in crate::front::reverse) fn stamped_input_result(
        &mut self,
        skey: SKey,
        id: &Id,
        msg: &[u8],
    ) -> bool {
        if self.stamped_listen_reply(skey, id) {
            return true;
        }
        let now = self.now;
        let Some(core) = self.input_core(skey) else {
            return false;
        };
        let Some(out) = core.on_result(id, msg, now) else {
            return false;
        };
        self.stamped_input_call_out(skey, Some(id), out);
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
        if let Some(out) = self
            .input_core(skey)
            .and_then(|core| core.on_response(&id, line))
        {
            self.stamped_input_out(skey, out);
        }
        true
    }

    /// The client cancelled call `id`: the relay's requests for it still
    /// open are cancelled at the client.
    pub(in crate::front::reverse) fn stamped_input_cancel(&mut self, skey: SKey, id: &Id) {
        let Some(core) = self.input_core(skey) else {
            return;
        };
        for line in core.cancel(id) {
            self.push_to_stream(skey, line);
        }
    }

    /// The round timer of session `skey` fired.
    pub(in crate::front::reverse) fn stamped_input_tick(&mut self, skey: SKey) {
        let now = self.now;
        if let Some(si) = self
            .sessions
            .get_mut(&skey)
            .and_then(|s| s.stamp_input.as_mut())
        {
            si.timer = None;
        }
        let outs = self
            .input_core(skey)
            .map(|core| core.expire(now))
            .unwrap_or_default();
        for out in outs {
            self.stamped_input_out(skey, out);
        }
        self.stamped_input_rearm(skey);
    }

    /// The session's input core: its own for a process, its stamper's over
    /// HTTP.
    fn input_core(&mut self, skey: SKey) -> Option<&mut StamperInput> {
        if self.ups[up_of(skey)].is_http() {
            return self.http_stamper_input(skey);
        }
        self.sessions
            .get_mut_inline(&skey)?
            .stamp_input
            .as_mut()?
            .core
            .as_mut()
    }

    /// Carries out what the core decided for one call (`call`, else the one
    /// its retry or answer names; requests to the client go on that call's
    /// POST, and restart its response timeout: the client is working on
    /// it).
    pub(in crate::front::reverse) fn stamped_input_out(&mut self, skey: SKey, out: Out) {
        self.stamped_input_call_out(skey, None, out);
    }

    fn stamped_input_call_out(&mut self, skey: SKey, call: Option<&Id>, out: Out) {
        let call = call.cloned().or_else(|| {
            out.retry
                .as_ref()
                .or(out.answer.as_ref())
                .map(|(c, _)| c.clone())
        });
        let route = call
            .as_ref()
            .and_then(|c| self.sessions.get(&skey)?.inflight.get(c).map(|r| r.route));
        if route.is_some()
            && !out.to_client.is_empty()
            && out.answer.is_none()
            && let Some(c) = &call
        {
            self.arm_response_timer(skey, c);
        }
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
            if self.ups[up_of(skey)].is_http() {
                self.http_input_retry(skey, &line, id);
            } else if let Ok(Message::Single(env)) = jsonrpc::peek(&line) {
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
        let Some((stats, next)) = self
            .input_core(skey)
            .map(|core| (std::mem::take(&mut core.stats), core.next_deadline()))
        else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&skey) else {
            return;
        };
        let si = s.stamp_input.get_or_insert_with(|| {
            Box::new(StampedInput {
                core: None,
                timer: None,
            })
        });
        if let Some(t) = si.timer.take() {
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
