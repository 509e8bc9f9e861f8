//! `forward --url`: what ends exchanges early: a request's response
//! timeout (cancel it upstream) and the relay's shutdown (DELETE the
//! session, then give up on what is left).

use super::super::{Forward, TimerKind};
use super::Carry;
use crate::proto::jsonrpc::{self, Id};
use crate::record::Direction;
use crate::upstream::http::Request;

impl Forward {
    /// The response timeout of a request fired: stop its exchange and tell the
    /// upstream it is cancelled.
    pub(in crate::front::forward) fn http_cancel(&mut self, id: &Id, initialize: bool) {
        if self.oauth_cancel(id) {
            // Waiting for a token: the upstream never saw it.
            return;
        }
        let reg = self.poll.registry();
        let Some(h) = self.server.http_mut() else {
            return;
        };
        if h.phase.unhold(id) {
            // Held: the upstream never saw it.
            return;
        }
        let mut was_legacy_post = false;
        let mut was_modern = false;
        if let Some(ex) = h.by_request.remove(id) {
            h.client.cancel(ex, reg);
            let carry = h.carries.remove(&ex);
            was_legacy_post = matches!(carry, Some(Carry::LegacyPost { .. }));
            // 2026-07-28: closing the exchange is the cancellation.
            was_modern = matches!(carry, Some(Carry::Post { modern: true, .. }));
        }
        if was_modern {
            return;
        }
        if was_legacy_post {
            // No event follows a cancelled exchange: the next legacy POST
            // may go now.
            self.legacy_posted();
        }
        if initialize {
            return;
        }
        let msg = jsonrpc::cancelled(id, "mcp-relay: response timeout");
        self.record(Direction::RelayToServer, &msg);
        self.http_send(&msg, None);
    }

    /// Shutdown. With requests in flight (the host closed stdin right
    /// after sending them) their answers may still come for `--kill-grace`:
    /// the session stays as it is until they are all answered or the grace
    /// is over ([`http_drained`](Self::http_drained)); then it ends.
    pub(in crate::front::forward) fn http_close(&mut self) {
        self.oauth_close();
        let now = self.now;
        let grace = self.cfg.kill_grace;
        let in_flight = !self.pending.is_empty() && !self.host.out_broken;
        let Some(h) = self.server.http_mut() else {
            return;
        };
        if in_flight && h.draining.is_none() {
            crate::log_info!(
                "stdin closed with {} request(s) in flight: waiting up to {grace:?} for their answers",
                self.pending.len()
            );
            let t = self.timers.insert(now + grace, TimerKind::HttpDrain);
            if let Some(h) = self.server.http_mut() {
                h.draining = Some(t);
            }
            return;
        }
        self.http_end_session();
    }

    /// The drain after stdin's EOF is over: every request answered, or
    /// `timed_out` (the grace is over: what is left is answered
    /// `upstream_closed` when the relay exits).
    pub(in crate::front::forward) fn http_drained(&mut self, timed_out: bool) {
        let Some(t) = self.server.http_mut().and_then(|h| h.draining.take()) else {
            return;
        };
        if timed_out {
            crate::log_warn!(
                "{} request(s) still unanswered {:?} after stdin closed",
                self.pending.len(),
                self.cfg.kill_grace
            );
        } else {
            self.timers.cancel(t);
        }
        self.http_end_session();
    }

    /// Ends the upstream session politely (DELETE), bounded by the kill
    /// grace.
    fn http_end_session(&mut self) {
        let now = self.now;
        let reg = self.poll.registry();
        let Some(h) = self.server.http_mut() else {
            return;
        };
        h.get.stop();
        if let Some(ex) = h.get_ex.take() {
            h.client.cancel(ex, reg);
        }
        for t in [
            h.get_timer.take(),
            h.hold_timer.take(),
            h.reinit_timer.take(),
        ]
        .into_iter()
        .flatten()
        {
            self.timers.cancel(t);
        }
        let Some(h) = self.server.http_mut() else {
            return;
        };
        if h.session_id.is_some() && h.legacy.is_none() {
            let req = Request::delete(h.url.target.clone(), h.headers(true));
            let ex = h.client.submit(req, reg, now);
            h.carries.insert(ex, Carry::Delete);
            h.delete_ex = Some(ex);
            self.timers
                .insert(now + self.cfg.kill_grace, TimerKind::FinalFlush);
        }
    }

    /// Gives up on everything still open (the grace is over).
    pub(in crate::front::forward) fn http_abandon(&mut self) {
        let reg = self.poll.registry();
        if let Some(h) = self.server.http_mut() {
            h.delete_ex = None;
            h.client.close_all(reg);
        }
    }
}
