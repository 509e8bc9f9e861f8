//! The relay's stop (SIGTERM, SIGINT): the shutdown machine
//! (`session::shutdown`) decides, this carries its verdicts out: the drain
//! (pools stop, bridges end their listens), the final phase (listeners
//! closed, sessions ended, processes closed, keep-alive clients closed
//! after their output) and the exit once nothing is left.

use mio::Token;

use super::*;

impl Reverse {
    /// Lets the shutdown machine move on (it does nothing while serving).
    pub(super) fn shutdown_tick(&mut self) {
        if !self.shutdown.is_stopping() || self.shutdown.is_final() {
            return;
        }
        let drained = self.drained();
        if let Some(v) = self.shutdown.tick(self.now, drained) {
            self.apply_shutdown(v);
        }
    }

    /// Carries out what the shutdown machine decided.
    pub(super) fn apply_shutdown(&mut self, v: ShutdownVerdict) {
        match v {
            // The listeners stay open through the drain and the grace so that
            // a load balancer's health check gets `/healthz` 503 (and sends
            // no new session here) and requests of existing sessions are
            // still served; new sessions get 503.
            ShutdownVerdict::BeginDrain { wake } => {
                for u in 0..self.ups.len() {
                    let actions = self.ups[u].pool(|p| p.shutdown(self.now));
                    self.apply(u, actions);
                    self.http_bridge_drain(u);
                }
                for at in wake {
                    self.timers.insert(at, TimerKind::Shutdown);
                }
            }
            ShutdownVerdict::EnterFinal { hard_stop } => {
                self.enter_final_phase();
                self.timers.insert(hard_stop, TimerKind::HardStop);
            }
            ShutdownVerdict::KillAll => self.kill_procs(),
        }
    }

    /// No request is in flight anywhere (held for an introspection too).
    pub(super) fn drained(&self) -> bool {
        self.held_requests() == 0
            && self
                .sessions
                .values()
                .all(|s| s.inflight.is_empty() && !s.binding.is_waiting())
    }

    /// Closes the listeners, ends every session and closes every process.
    fn enter_final_phase(&mut self) {
        for (_, l, _) in &mut self.listen.listeners {
            let _ = self.poll.registry().deregister(l);
        }
        self.listen.listeners.clear();
        let keys: Vec<SKey> = self.sessions.keys().copied().collect();
        for k in keys {
            self.end_session(k, "the relay is shutting down");
        }
        (0..self.ups.len()).for_each(|u| self.http_bridge_exit(u));
        let conns: Vec<PKey> = self.procs.keys().copied().collect();
        for conn in conns {
            self.close_proc(conn, Cause::Asked);
        }
        // Idle keep-alive connections close now; the rest after their output.
        let toks: Vec<Token> = self.client_tokens();
        self.refuse_held_for_shutdown(&toks);
        for tok in toks {
            if let Some(c) = self.client(tok) {
                c.set_state(ClientState::Closing);
                self.work.dirty.push(tok);
            }
        }
    }

    pub(super) fn finished(&mut self) -> bool {
        // The DELETEs ending upstream sessions go out before the exit.
        let http_idle = self
            .ups
            .iter()
            .all(|u| u.http().is_none_or(|h| h.in_flight() == 0));
        let clients_left = self.listen.clients > 0 || !http_idle;
        self.shutdown.try_exit(!self.procs.is_empty(), clients_left)
    }
}
